// Command fakebin stands in for calyx-agent and calyxctl in the lab's own
// tests, so the lab's process, readiness and cleanup plumbing is tested
// without the real dataplane. It acts according to the name it is run as.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "calyx-agent":
		agent(os.Args[1:])
	case "calyxctl":
		ctl(os.Args[1:])
	default:
		fmt.Fprintf(os.Stderr, "fakebin: unknown name %s\n", os.Args[0])
		os.Exit(2)
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// agent serves /healthz, /readyz and /metrics; it reports map writes only
// on its first start against a bpffs dir, like a real agent adopting state.
func agent(args []string) {
	bpffs, addr := flagValue(args, "--bpffs"), flagValue(args, "--metrics")
	if err := os.MkdirAll(bpffs, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	writes := 0
	marker := filepath.Join(bpffs, "synced")
	if _, err := os.Stat(marker); err != nil {
		writes = 3
		if err := os.Mkdir(marker, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if flagValue(args, "--fail") != "" {
		fmt.Fprintln(os.Stderr, "failing as asked")
		os.Exit(3)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ready\n") })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE calyx_sync_map_writes_total counter\n")
		fmt.Fprintf(w, "calyx_sync_map_writes_total{map=\"endpoints\"} %d\n", writes)
		fmt.Fprintf(w, "calyx_sync_map_writes_total{map=\"routes\"} 0\n")
		fmt.Fprintf(w, "calyx_sync_map_writes_total_other 7\n")
	})
	fmt.Println("fake agent listening on", addr)
	go func() {
		if err := http.ListenAndServe(addr, mux); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("fake agent got", <-sig)
}

// ctl answers "node status" and "routes dump" with canned multi-host
// output (in the shape of the real calyxctl's -o json) and otherwise prints
// its arguments and standard input as JSON.
func ctl(args []string) {
	switch verb(args) {
	case "node status":
		fmt.Println(`[{"node":"host-a","underlay":"eth0","ifindex":2,"address":"10.30.0.11","underlayMTU":1500,"workloadMTU":1450,"encap":"none,vxlan","peers":2,"vxlanPort":4789,"vxlanVNI":4096}]`)
		return
	case "routes dump":
		fmt.Println(`[
 {"cidr":"10.30.0.11/32","type":"host","interface":"","ifindex":0,"nextHop":"","node":"","encap":"none"},
 {"cidr":"10.65.1.2/32","type":"local-workload","interface":"cx0001w1","ifindex":3,"mac":"02:00:00:00:00:01"},
 {"cidr":"10.65.2.0/26","type":"remote-workload","interface":"eth0","ifindex":2,"nextHop":"10.30.0.12","node":"host-b","encap":"none"},
 {"cidr":"10.65.3.0/26","type":"remote-workload","interface":"eth0","ifindex":2,"nextHop":"10.30.1.13","node":"host-c","encap":"vxlan"},
 {"cidr":"10.65.3.2/32","type":"remote-workload","interface":"eth0","ifindex":2,"nextHop":"10.30.1.13","node":"host-c","encap":"vxlan"}
]`)
		return
	}
	in, _ := io.ReadAll(os.Stdin)
	json.NewEncoder(os.Stdout).Encode(map[string]any{"args": args, "stdin": string(in)})
}

// verb returns the first two arguments that are neither flags nor flag
// values, e.g. "node status".
func verb(args []string) string {
	var words []string
	for i := 0; i < len(args) && len(words) < 2; i++ {
		switch {
		case args[i] == "--datastore", args[i] == "--bpffs", args[i] == "-o":
			i++
		case len(args[i]) > 0 && args[i][0] == '-':
		default:
			words = append(words, args[i])
		}
	}
	if len(words) < 2 {
		return ""
	}
	return words[0] + " " + words[1]
}
