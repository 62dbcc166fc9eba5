// Command calyx-agent programs the calyx dataplane of one host from the model.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/calyxnet/calyx/agent"
	"github.com/calyxnet/calyx/flagfile"
	"github.com/calyxnet/calyx/loader"
	"github.com/calyxnet/calyx/model"
)

// DefaultConfigFile is where the package installs the agent's config file.
const DefaultConfigFile = "/etc/calyx/agent.yaml"

// options are calyx-agent's flags. Every one is also a key of the config
// file (--config), named as the flag.
type options struct {
	config, node, datastore, underlay, bpffs, metrics *string
	etcdCA, etcdCert, etcdKey, failAttach             *string
	logLevel                                          *slog.Level
	logFormat                                         *string
	attach                                            *loader.Mode
	xdp                                               *loader.XDPMode
	resync, emptyGrace, deadGrace, nodeTTL            *time.Duration
	bgpWithdraw, cleanup                              *bool
}

// commandLineOnly are the flags no config file may set: one-shot actions
// (--cleanup), which a service's every start would otherwise take.
var commandLineOnly = []string{"cleanup"}

// defineFlags defines calyx-agent's flags on fs. Values that can be wrong
// are checked as they are set, so that a bad one in the config file is
// refused naming its key and the file.
func defineFlags(fs *flag.FlagSet) *options {
	host, _ := os.Hostname()
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: calyx-agent [flags]\n\n"+
			"calyx-agent programs this host's calyx dataplane from the model. Every flag is also a key\n"+
			"of the config file (--config, YAML: flag name: value); a flag on the command line wins.\n\nflags:\n")
		fs.PrintDefaults()
	}
	never := func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err == nil && d < 0 {
			err = errors.New("want 0 (never) or a positive duration")
		}
		return d, err
	}
	return &options{
		config:    fs.String("config", DefaultConfigFile, "YAML file of flag values, keys named as the flags (a missing default file is no error; empty: none)"),
		node:      fs.String("node", host, "this host's Node name"),
		datastore: fs.String("datastore", "file:///var/lib/calyx", "datastore URL: file:///DIR or etcd://HOST:PORT[,HOST:PORT]"),
		underlay:  fs.String("underlay", "", "underlay interface (default: the default route's)"),
		bpffs:     fs.String("bpffs", "/sys/fs/bpf/calyx", "directory on a bpffs for pinned maps and links"),
		metrics:   fs.String("metrics", "127.0.0.1:9091", "address for /metrics, /healthz, /readyz and /bgp (empty: off); the default is reachable from the host only, not from workloads: give the address a Prometheus on the management network scrapes"),
		xdp:       checked(fs, "xdp", "auto", "where the host prefilter runs, `auto|native|off`: auto (XDP on a physical underlay NIC, TC on a veth), native (XDP or fail) or off (TC)", loader.ParseXDPMode),
		attach:    checked(fs, "attach", "auto", "how to attach TC programs: `auto|tcx|clsact`", loader.ParseMode),
		logLevel: checked(fs, "log-level", "info", "the log's level: `debug|info|warn|error`", func(s string) (l slog.Level, err error) {
			return l, l.UnmarshalText([]byte(s))
		}),
		logFormat: checked(fs, "log-format", "text", "the log's format: `text|json` (key=value lines, or one JSON object a line); endpoints and their interfaces are the fields endpoint and interface", func(s string) (string, error) {
			_, err := agent.NewLogger(io.Discard, s, slog.LevelInfo)
			return s, err
		}),
		resync:      checked(fs, "resync-interval", "1m0s", "how often (a `duration`) to re-read the pinned maps and repair what differs from the model (0: never)", never),
		etcdCA:      fs.String("etcd-ca", "", "etcd over TLS: PEM file of the CA that signed etcd's certificate"),
		etcdCert:    fs.String("etcd-cert", "", "etcd over TLS: PEM file of the agent's client certificate (with --etcd-key)"),
		etcdKey:     fs.String("etcd-key", "", "etcd over TLS: PEM file of the client certificate's key"),
		bgpWithdraw: fs.Bool("bgp-withdraw-on-stop", false, "withdraw this node's BGP routes when the agent stops (SIGTERM); off, peers keep them as a graceful restart, so that upgrades keep routes"),
		emptyGrace:  fs.Duration("empty-block-grace", 15*time.Minute, "give an IPAM block of this node back to its pool once it has been empty (no allocation, no endpoint address inside) this long (0: never)"),
		deadGrace:   checked(fs, "dead-node-grace", "10m0s", "etcd datastore: once another node holding IPAM blocks has had no live agent (liveness lease, see --node-ttl) for this long (a `duration`), give back its blocks no endpoint address falls in and, in the others, the allocations no endpoint uses; one agent at a time does it, by lock (0: never)", never),
		failAttach:  fs.String("debug-fail-attach-file", "", "testing only: a file of interface names whose attach fails while they are listed"),
		cleanup:     fs.Bool("cleanup", false, "decommission this host and exit (command line only): detach every calyx program, remove its routes, neighbour entries and the pins under --bpffs, and put back the sysctls it changed; refused while an agent runs on --bpffs (stop it first, with --bgp-withdraw-on-stop to withdraw its BGP routes)"),
		nodeTTL: checked(fs, "node-ttl", agent.DefaultNodeTTL.String(), "lease (a `duration`, at least 1s) that keeps this node live in an etcd datastore: the node shows as not live this long after the agent stops", func(s string) (time.Duration, error) {
			d, err := time.ParseDuration(s)
			if err == nil && d < time.Second {
				err = errors.New("want at least 1s")
			}
			return d, err
		}),
	}
}

// checkedValue is a flag whose value is parsed, and so checked, when it is
// set.
type checkedValue[T any] struct {
	v     *T
	text  string
	parse func(string) (T, error)
}

func (c *checkedValue[T]) String() string {
	if c == nil {
		return "" // flag.PrintDefaults asks a zero value
	}
	return c.text
}

func (c *checkedValue[T]) Set(s string) error {
	v, err := c.parse(s)
	if err != nil {
		return err
	}
	*c.v, c.text = v, s
	return nil
}

// checked defines a flag parsed by parse, starting at def (which must
// parse).
func checked[T any](fs *flag.FlagSet, name, def, usage string, parse func(string) (T, error)) *T {
	c := &checkedValue[T]{v: new(T), parse: parse}
	if err := c.Set(def); err != nil {
		panic(fmt.Sprintf("flag --%s: default %q: %v", name, def, err))
	}
	fs.Var(c, name, usage)
	return c.v
}

func main() {
	o := defineFlags(flag.CommandLine)
	if err := flagfile.Parse(flag.CommandLine, os.Args[1:], "config", commandLineOnly...); err != nil {
		fail(err)
	}
	if *o.cleanup {
		r, err := agent.Cleanup(*o.bpffs)
		fmt.Println(r)
		if err != nil {
			fail(err)
		}
		return
	}
	if _, err := model.TLSOptions(*o.datastore, *o.etcdCA, *o.etcdCert, *o.etcdKey); err != nil {
		fail(err)
	}
	log, err := agent.NewLogger(os.Stderr, *o.logFormat, *o.logLevel)
	if err != nil {
		fail(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = agent.Run(ctx, agent.Config{
		Node: *o.node, Datastore: *o.datastore, Underlay: *o.underlay, BPFFS: *o.bpffs,
		Metrics: *o.metrics, Attach: *o.attach, XDP: *o.xdp, Logger: log, ResyncInterval: *o.resync, DebugFailAttachFile: *o.failAttach, EmptyBlockGrace: *o.emptyGrace, DeadNodeGrace: *o.deadGrace,
		EtcdCA: *o.etcdCA, EtcdCert: *o.etcdCert, EtcdKey: *o.etcdKey, NodeTTL: *o.nodeTTL,
		BGPWithdrawOnStop: *o.bgpWithdraw,
	})
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "calyx-agent:", err)
	os.Exit(1)
}
