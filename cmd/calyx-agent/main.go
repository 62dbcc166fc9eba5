// Command calyx-agent programs the calyx dataplane of one host from the model.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/calyxnet/calyx/agent"
	"github.com/calyxnet/calyx/loader"
	"github.com/calyxnet/calyx/model"
)

func main() {
	host, _ := os.Hostname()
	var (
		node        = flag.String("node", host, "this host's Node name")
		datastore   = flag.String("datastore", "file:///var/lib/calyx", "datastore URL: file:///DIR or etcd://HOST:PORT[,HOST:PORT]")
		underlay    = flag.String("underlay", "", "underlay interface (default: the default route's)")
		bpffs       = flag.String("bpffs", "/sys/fs/bpf/calyx", "directory on a bpffs for pinned maps and links")
		metrics     = flag.String("metrics", "127.0.0.1:9091", "address for /metrics, /healthz, /readyz and /bgp (empty: off); the default is reachable from the host only, not from workloads: give the address a Prometheus on the management network scrapes")
		xdp         = flag.String("xdp", "auto", "where the host prefilter runs: auto (XDP on a physical underlay NIC, TC on a veth), native (XDP or fail) or off (TC)")
		attach      = flag.String("attach", "auto", "how to attach TC programs: auto|tcx|clsact")
		logLevel    = flag.String("log-level", "info", "debug|info|warn|error")
		logFormat   = flag.String("log-format", "text", "text (key=value lines) or json (one object a line); endpoints and their interfaces are the fields endpoint and interface")
		resync      = flag.Duration("resync-interval", time.Minute, "how often to re-read the pinned maps and repair what differs from the model (0: never)")
		etcdCA      = flag.String("etcd-ca", "", "etcd over TLS: PEM file of the CA that signed etcd's certificate")
		etcdCert    = flag.String("etcd-cert", "", "etcd over TLS: PEM file of the agent's client certificate (with --etcd-key)")
		etcdKey     = flag.String("etcd-key", "", "etcd over TLS: PEM file of the client certificate's key")
		bgpWithdraw = flag.Bool("bgp-withdraw-on-stop", false, "withdraw this node's BGP routes when the agent stops (SIGTERM); off, peers keep them as a graceful restart, so that upgrades keep routes")
		emptyGrace  = flag.Duration("empty-block-grace", 15*time.Minute, "give an IPAM block of this node back to its pool once it has been empty (no allocation, no endpoint address inside) this long (0: never)")
		deadGrace   = flag.Duration("dead-node-grace", 10*time.Minute, "etcd datastore: once another node holding IPAM blocks has had no live agent (liveness lease, see --node-ttl) for this long, give back its blocks no endpoint address falls in and, in the others, the allocations no endpoint uses; one agent at a time does it, by lock (0: never)")
		failAttach  = flag.String("debug-fail-attach-file", "", "testing only: a file of interface names whose attach fails while they are listed")
		nodeTTL     = flag.Duration("node-ttl", agent.DefaultNodeTTL, "lease that keeps this node live in an etcd datastore: the node shows as not live this long after the agent stops")
		cleanup     = flag.Bool("cleanup", false, "decommission this host and exit: detach every calyx program, remove its routes, neighbour entries and the pins under --bpffs, and put back the sysctls it changed; refused while an agent runs on --bpffs (stop it first, with --bgp-withdraw-on-stop to withdraw its BGP routes)")
	)
	flag.Parse()
	if *cleanup {
		r, err := agent.Cleanup(*bpffs)
		fmt.Println(r)
		if err != nil {
			fail(err)
		}
		return
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fail(fmt.Errorf("--log-level: %w", err))
	}
	mode, err := loader.ParseMode(*attach)
	if err != nil {
		fail(fmt.Errorf("--attach: %w", err))
	}
	xdpMode, err := loader.ParseXDPMode(*xdp)
	if err != nil {
		fail(fmt.Errorf("--xdp: %w", err))
	}
	if *resync < 0 {
		fail(fmt.Errorf("--resync-interval %s: want 0 (never) or a positive duration", *resync))
	}
	if *deadGrace < 0 {
		fail(fmt.Errorf("--dead-node-grace %s: want 0 (never) or a positive duration", *deadGrace))
	}
	if *nodeTTL < time.Second {
		fail(fmt.Errorf("--node-ttl %s: want at least 1s", *nodeTTL))
	}
	if _, err := model.TLSOptions(*datastore, *etcdCA, *etcdCert, *etcdKey); err != nil {
		fail(err)
	}
	log, err := agent.NewLogger(os.Stderr, *logFormat, level)
	if err != nil {
		fail(fmt.Errorf("--log-format: %w", err))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = agent.Run(ctx, agent.Config{
		Node: *node, Datastore: *datastore, Underlay: *underlay, BPFFS: *bpffs,
		Metrics: *metrics, Attach: mode, XDP: xdpMode, Logger: log, ResyncInterval: *resync, DebugFailAttachFile: *failAttach, EmptyBlockGrace: *emptyGrace, DeadNodeGrace: *deadGrace,
		EtcdCA: *etcdCA, EtcdCert: *etcdCert, EtcdKey: *etcdKey, NodeTTL: *nodeTTL,
		BGPWithdrawOnStop: *bgpWithdraw,
	})
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "calyx-agent:", err)
	os.Exit(1)
}
