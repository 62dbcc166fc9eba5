// Command calyx-lab builds calyx network-namespace labs: "demo" shows the
// dataplane working end to end and removes everything, "up" leaves a lab
// running, "destroy" removes labs (also leftovers of crashed runs),
// "list" shows what exists and "inject" writes hand-built frames to an
// interface. The hidden command "vm-relay" is the process behind each VM
// workload (see lab.RunVMRelay). The logic lives in tests/lab.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/calyxnet/calyx/tests/lab"
)

const usage = `usage: calyx-lab [--bin DIR] [-v] COMMAND

commands:
  demo                   build a host with three workloads, run the agent, show traffic,
                         spoof drops and calyxctl's view; then three hosts on two subnets
                         behind a router in VXLAN CrossSubnet mode, with traffic across
                         hosts and a capture of the underlay; remove everything
  up [--topology single|multi] [--mode MODE] [--datastore file|etcd] [--workload veth|vm|mixed]
                         build a lab and leave it running: single (default) is the demo's
                         one host, multi its three hosts with the pool in MODE
                         (ipip, vxlan, ipip-crosssubnet, vxlan-crosssubnet (default), never);
                         etcd runs one etcd (TLS) in its own namespace on the fabric segment
                         as the agents' and calyxctl's datastore (file: a shared directory);
                         workloads are veth pairs (pods, the default), VMs (a tap on the host
                         joined by a relay process to a tap as the instance's eth0, like
                         QEMU with vhost-net) or mixed (even-numbered workloads VMs)
  destroy PREFIX|--all   remove a lab (or every lab) and its leftovers
  list                   list the prefixes of labs present on this machine
  inject --iface IFACE [--count N] HEXFRAME...
                         write each Ethernet frame (hex) as it is to a packet socket on
                         IFACE in the current network namespace, N times (default 1);
                         run it in a lab namespace with "ip netns exec"

environment:
  CALYX_LAB_WORKLOAD     default workload kind (veth, vm or mixed) when --workload is not given
`

func main() {
	fs := flag.NewFlagSet("calyx-lab", flag.ExitOnError)
	bin := fs.String("bin", "", "directory holding calyx-agent and calyxctl (default: the repository's bin/)")
	verbose := fs.Bool("v", false, "print every command the lab runs")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() < 1 {
		fs.Usage()
		os.Exit(2)
	}
	opts := lab.Options{BinDir: *bin}
	if *verbose {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	// Ctrl-C cancels the run; the lab then removes what it built.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := run(ctx, opts, fs.Arg(0), fs.Args()[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "calyx-lab: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, opts lab.Options, cmd string, args []string) error {
	switch cmd {
	case "demo":
		return lab.Demo(ctx, opts, os.Stdout)
	case "up":
		return up(ctx, opts, args)
	case "vm-relay":
		return vmRelay(ctx, args)
	case "inject":
		return inject(args)
	case "destroy":
		if len(args) != 1 {
			return fmt.Errorf("destroy needs PREFIX or --all\n%s", usage)
		}
		if args[0] == "--all" {
			return lab.ReapAll()
		}
		return lab.Reap(args[0])
	case "list":
		prefixes, err := lab.Leftovers()
		for _, p := range prefixes {
			fmt.Println(p)
		}
		return err
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

// up parses the flags of "up" and builds the chosen topology.
func up(ctx context.Context, opts lab.Options, args []string) error {
	fs := flag.NewFlagSet("calyx-lab up", flag.ContinueOnError)
	topology := fs.String("topology", "single", "single: one host with three workloads; multi: three hosts on two subnets behind a router")
	mode := fs.String("mode", string(lab.ModeVXLANCrossSubnet), "encapsulation of the multi topology's pool: ipip, vxlan, ipip-crosssubnet, vxlan-crosssubnet or never")
	datastore := fs.String("datastore", lab.DatastoreFile, "the agents' datastore: file (a directory) or etcd (an etcd in the lab, with TLS)")
	workload := fs.String("workload", "", "workload kind: veth (default), vm or mixed (default from $"+lab.WorkloadKindEnv+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *workload != "" {
		k, err := lab.ParseWorkloadKind(*workload)
		if err != nil {
			return fmt.Errorf("up: --workload: %w", err)
		}
		opts.WorkloadKind = k
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("up: unexpected arguments %v", fs.Args())
	}
	switch *datastore {
	case lab.DatastoreFile, lab.DatastoreEtcd:
		opts.Datastore = *datastore
	default:
		return fmt.Errorf("up: --datastore %q: want file or etcd", *datastore)
	}
	modeSet := false
	fs.Visit(func(f *flag.Flag) { modeSet = modeSet || f.Name == "mode" })
	switch *topology {
	case "single":
		if modeSet {
			return fmt.Errorf("up: --mode applies only to --topology multi")
		}
		_, err := lab.Up(ctx, opts, os.Stdout)
		return err
	case "multi":
		m, err := lab.ParseEncapMode(*mode)
		if err != nil {
			return fmt.Errorf("up: %w", err)
		}
		_, err = lab.UpMulti(ctx, opts, m, os.Stdout)
		return err
	}
	return fmt.Errorf("up: unknown topology %q: want single or multi", *topology)
}

// vmRelay parses the flags of the hidden "vm-relay" command and runs the
// relay of one VM workload until it is stopped.
func vmRelay(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("calyx-lab vm-relay", flag.ContinueOnError)
	var cfg lab.VMRelayConfig
	fs.StringVar(&cfg.HostNS, "host-ns", "", "namespace of the host-side tap")
	fs.StringVar(&cfg.HostTap, "host-tap", "", "name of the host-side tap")
	fs.StringVar(&cfg.VMNS, "vm-ns", "", "namespace of the instance's tap")
	fs.StringVar(&cfg.VMTap, "vm-tap", "eth0", "name of the instance's tap")
	fs.StringVar(&cfg.StatsPath, "stats", "", "JSON file for the relay's counters (written when ready, on SIGUSR1 and on exit)")
	fs.IntVar(&cfg.ParentPID, "parent", 0, "exit when the parent process is no longer this pid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("vm-relay: unexpected arguments %v", fs.Args())
	}
	return lab.RunVMRelay(ctx, cfg)
}

// inject parses the flags of "inject" and writes the frames.
func inject(args []string) error {
	fs := flag.NewFlagSet("calyx-lab inject", flag.ContinueOnError)
	var cfg lab.InjectConfig
	fs.StringVar(&cfg.Iface, "iface", "", "interface to write the frames to (in the current network namespace)")
	fs.IntVar(&cfg.Count, "count", 1, "how many times each frame is written")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("inject: no frame given\n%s", usage)
	}
	for _, a := range fs.Args() {
		f, err := lab.ParseHexFrame(a)
		if err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		cfg.Frames = append(cfg.Frames, f)
	}
	n, err := lab.RunInject(cfg)
	if err != nil {
		return err
	}
	fmt.Printf("sent %d frame(s) on %s\n", n, cfg.Iface)
	return nil
}
