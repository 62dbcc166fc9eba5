// Command calyx-load is a small TCP load tool for calyx's benchmarks:
// "serve" answers fixed-size requests, "rr" measures request/response rate
// over persistent connections and "crr" the rate of whole connections. The
// logic lives in tests/loadgen.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/calyxnet/calyx/tests/loadgen"
)

const usage = `usage:
  calyx-load serve --listen IP:PORT [--request N] [--response N]
  calyx-load rr    --target IP:PORT [--duration D] [--conns N] [--rate R] [--request N] [--response N]
  calyx-load crr   --target IP:PORT [--duration D] [--conns N] [--rate R] [--request N] [--response N]
rr and crr print one JSON object: mode, conns, rate (when set), seconds,
transactions, perSecond, latencyP50us, latencyP99us, errors. --rate offers a
fixed load (transactions per second over all connections) instead of the most
the path carries.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "calyx-load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet("calyx-load "+cmd, flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on (serve)")
	target := fs.String("target", "", "server address (rr, crr)")
	duration := fs.Duration("duration", 5*time.Second, "how long to measure")
	conns := fs.Int("conns", 1, "concurrent connections")
	rate := fs.Float64("rate", 0, "transactions per second over all connections (0: as fast as possible)")
	req := fs.Int("request", 1, "request size in bytes")
	resp := fs.Int("response", 1, "response size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sizes := loadgen.Sizes{Request: *req, Response: *resp}
	switch cmd {
	case "serve":
		if *listen == "" {
			return fmt.Errorf("serve needs --listen IP:PORT")
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
		return loadgen.Serve(ctx, ln, sizes)
	case "rr", "crr":
		if *target == "" {
			return fmt.Errorf("%s needs --target IP:PORT", cmd)
		}
		res, err := loadgen.Run(ctx, loadgen.Options{Mode: loadgen.Mode(cmd), Target: *target,
			Duration: *duration, Conns: *conns, Sizes: sizes, Rate: *rate})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}
