// Package ctl is calyxctl: verbs that change the model (apply, delete) and
// nouns that only read it or the pinned maps (get, endpoints, routes,
// counters, links, version). It runs in-process with injected IO so every
// command is testable without a shell.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Version is set at build time with -ldflags "-X ...ctl.Version=...".
var Version = "dev"

// IO is where a command reads and writes.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Options are calyxctl's global flags.
type Options struct {
	BPFFS     string
	Datastore string
	Output    string // table | json | yaml
	// EtcdCA, EtcdCert and EtcdKey are PEM files for an etcd datastore
	// over TLS: the CA that signed etcd's certificate, and this client's
	// certificate and key (both or neither).
	EtcdCA, EtcdCert, EtcdKey string
	// Agent is the agent's --metrics listener, where node status and bgp
	// routes read the BGP speaker's state.
	Agent string

	// stderr receives the datastore's warnings (Run sets it).
	stderr io.Writer
}

// DefaultOptions match calyx-agent's defaults.
func DefaultOptions() Options {
	return Options{BPFFS: "/sys/fs/bpf/calyx", Datastore: "file:///var/lib/calyx", Output: "table",
		Agent: "http://127.0.0.1:9091"}
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usage = `usage: calyxctl [--bpffs DIR] [--datastore URL] [--etcd-ca FILE] [--etcd-cert FILE --etcd-key FILE]
                [--agent URL] [-o|--output table|json|yaml] COMMAND

The datastore is file:///DIR (default file:///var/lib/calyx) or etcd://HOST:PORT[,HOST:PORT];
--etcd-ca, --etcd-cert and --etcd-key talk TLS to etcd (as calyx-agent's flags of the same names).
--agent is the agent's --metrics address, for BGP status (default http://127.0.0.1:9091).

verbs (change the model):
  apply -f FILE [--force]  create or replace the resources in FILE ('-' for stdin); all or nothing; what it
                           accepts but cannot mean is printed as "warning: ..." on stderr; an IPAMBlock
                           (IPAM's own record) needs --force
  delete -f FILE           delete the resources named in FILE
  delete KIND NAME         delete one resource
  ipam allocate --node NODE [--handle H]
                           hand out an address from NODE's blocks (claiming a block when they are
                           full) to handle H (default calyxctl); prints the address
  ipam release ADDR|--handle H
                           free an address ipam allocate handed out
nouns (read only):
  get KIND [NAME]          resources of a kind (IPPool, Node, Subnet, WorkloadEndpoint, FloatingIP, NetworkPolicy,
                           Config, IPAMBlock, BGPConfiguration, BGPPeer; any case, singular or plural)
  get subnets              NAME, CIDR, GATEWAY, DHCP (yes/no), DNS, HOST-ROUTES (their destinations, all via
                           the gateway), NETWORK
  get bgpconfigurations    NAME, LOGSEVERITY, MESHENABLED, ASNUMBER (the stored one; none means the defaults)
  get bgppeers             NAME, PEERIP, NODE (the node, the nodeSelector, or (global) for every node), ASN
  get nodes                LIVE: the node's agent keeps its lease in the datastore (yes/no; '-' without
                           liveness, e.g. a file datastore); status.live in JSON and YAML
  ipam show                IPAM blocks: CIDR, POOL, the NODE holding it, USED (allocated) and SIZE
  endpoints dump           the endpoints programmed in the dataplane
  routes dump              the BPF route table
  counters dump            packets and bytes by interface and verdict reason
  links                    programs attached per interface (ATTACHED: the kernel runs it, checked in
                           calyxctl's network namespace: run it in the host's)
  maps                     the pinned maps: PIN (the name with its layout VERSION), BUILD (this
                           calyxctl's version of it), TYPE, MAX-ENTRIES and STATE (current; old: migrating,
                           beside this build's; older; newer): an upgrade in progress shows here
  node status              this node's underlay, MTUs and encapsulations in use, then the agent's BGP
                           peers per family (calicoctl's tables), disagreements with the datastore,
                           learned routes for the kernel FIB and peers it could not configure
  bgp routes [--advertised|--received] [PEER]
                           prefixes this node originates or sends to PEER (--advertised, default), or
                           learned (--received: best paths, or PEER's Adj-RIB-In)
  nat dump                 floating IPs (with their instance and node) and the active NAT sessions
  ct dump [--endpoint EP] [--proto P] [--port N]
                           tracked flows, one row per flow (TABLE: ct for cx_ct_v2, nat for translated
                           flows in cx_nat_v2), then the count per state; EP is an endpoint's name or an
                           address, P tcp, udp, icmp or icmpv6; a flow matches when either direction carries it
  ct flush                 remove every conntrack entry (established NAT flows break)
  dhcp leases              what the agent's DHCPv4/DHCPv6 servers leased: endpoint, interface, MAC,
                           address, expiry and when the client was last heard
  policy dump [ENDPOINT]   the effective rules of this host's endpoints, in order, with the new
                           flows each decided (HITS)
  monitor [--endpoint EP] [--reason R] [--proto P] [--for DURATION]
                           drops as they happen, from the agent (--agent): each new flow policy denied
                           with its rule and flow, each packet a Log rule matched, and every other
                           dropped packet with its reason and flow (at most 256 a second per CPU);
                           -o json: JSON lines; until interrupted, or for DURATION
  version                  this build's version
  completion bash          a bash completion script: source <(calyxctl completion bash) (the Debian package
                           installs it)
`

// Run executes one calyxctl command line (without the program name) and
// returns the process exit code: 0 on success, 1 when the command failed,
// 2 for a usage error.
func Run(ctx context.Context, args []string, stdio IO) int {
	opts, rest, err := parseGlobals(args, DefaultOptions())
	opts.stderr = stdio.Err
	if err == nil {
		err = dispatch(ctx, opts, rest, stdio)
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(stdio.Err, "calyxctl:", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprint(stdio.Err, usage)
		return 2
	}
	return 1
}

// parseGlobals takes the global flags from anywhere on the line, so that
// both `calyxctl -o json get nodes` and `calyxctl get nodes -o json` work.
func parseGlobals(args []string, o Options) (Options, []string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(a, "=")
		var dst *string
		switch name {
		case "--bpffs":
			dst = &o.BPFFS
		case "--datastore":
			dst = &o.Datastore
		case "--etcd-ca":
			dst = &o.EtcdCA
		case "--etcd-cert":
			dst = &o.EtcdCert
		case "--etcd-key":
			dst = &o.EtcdKey
		case "--agent":
			dst = &o.Agent
		case "-o", "--output":
			dst = &o.Output
		case "-h", "--help", "help":
			return o, nil, usagef("help requested")
		default:
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, nil, usagef("%s needs a value", name)
			}
			i++
			val = args[i]
		}
		*dst = val
	}
	switch o.Output {
	case "table", "json", "yaml":
	default:
		return o, nil, usagef("-o %q: want table, json or yaml", o.Output)
	}
	return o, rest, nil
}

func dispatch(ctx context.Context, o Options, args []string, stdio IO) error {
	if len(args) == 0 {
		return usagef("no command given")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "apply":
		return apply(ctx, o, args, stdio)
	case "delete":
		return deleteCmd(ctx, o, args, stdio)
	case "get":
		return get(ctx, o, args, stdio)
	case "ipam":
		return ipamCmd(ctx, o, args, stdio)
	case "endpoints", "routes", "counters":
		if len(args) != 1 || args[0] != "dump" {
			return usagef("%s: want '%s dump'", cmd, cmd)
		}
		return dump(ctx, o, cmd, stdio)
	case "nat":
		if len(args) != 1 || args[0] != "dump" {
			return usagef("nat: want 'nat dump'")
		}
		return dump(ctx, o, cmd, stdio)
	case "ct":
		switch {
		case len(args) >= 1 && args[0] == "dump":
			return ctDump(ctx, o, args[1:], stdio)
		case len(args) == 1 && args[0] == "flush":
			return ctFlush(o, stdio)
		}
		return usagef("ct: want 'ct dump [--endpoint EP] [--proto P] [--port N]' or 'ct flush'")
	case "node":
		if len(args) != 1 || args[0] != "status" {
			return usagef("node: want 'node status'")
		}
		return dump(ctx, o, cmd, stdio)
	case "policy":
		if len(args) < 1 || args[0] != "dump" {
			return usagef("policy: want 'policy dump [ENDPOINT]'")
		}
		return policyDump(ctx, o, args[1:], stdio)
	case "bgp":
		return bgpCmd(ctx, o, args, stdio)
	case "dhcp":
		if len(args) != 1 || args[0] != "leases" {
			return usagef("dhcp: want 'dhcp leases'")
		}
		return dhcpLeases(ctx, o, stdio)
	case "monitor":
		return monitorCmd(ctx, o, args, stdio)
	case "links":
		if len(args) != 0 {
			return usagef("links takes no arguments")
		}
		return dump(ctx, o, cmd, stdio)
	case "maps":
		if len(args) != 0 {
			return usagef("maps takes no arguments")
		}
		return mapsCmd(o, stdio)
	case "version":
		return render(stdio.Out, o.Output, []versionRow{{Version: Version}})
	case "completion":
		return completion(args, stdio)
	}
	return usagef("unknown command %q", cmd)
}
