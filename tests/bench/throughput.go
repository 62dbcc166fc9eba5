package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// ThroughputResult is one-stream TCP throughput between two workloads on
// one host, delivered by calyx's BPF redirect and by plain kernel routing
// (proxy_arp + /32 routes, as a routed host does without calyx), measured
// alternately in the same lab.
type ThroughputResult struct {
	BPFGbps, KernelGbps []float64
}

// Median returns the median of xs.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// LocalThroughput builds one host with two calyx workloads and two workloads
// routed by the kernel alone, and runs iperf3 between each pair in turn.
func LocalThroughput(ctx context.Context, binDir string, seconds, runs int) (*ThroughputResult, error) {
	l, err := lab.New(lab.Options{BinDir: binDir, Context: ctx})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		return nil, err
	}
	var ws []*lab.Workload
	for i, spec := range [][2]string{{"w1", "10.65.0.2"}, {"w2", "10.65.0.3"}, {"k1", "10.66.0.2"}, {"k2", "10.66.0.3"}} {
		w, err := l.AddWorkload("host-a", spec[0], spec[1], fmt.Sprintf("02:00:00:00:01:%02x", i+1))
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	// The kernel's own way: routes to the /32s and proxy_arp answering the
	// workloads' gateway. calyx's agent leaves these alone (not its protocol).
	for _, w := range ws[2:] {
		for _, args := range [][]string{
			{"ip", "link", "set", w.HostIface, "up"},
			{"ip", "route", "add", w.IP.String() + "/32", "dev", w.HostIface, "scope", "link"},
			{"sysctl", "-qw", "net.ipv4.conf." + w.HostIface + ".proxy_arp=1"},
		} {
			if _, err := l.Exec(h.NS, args...); err != nil {
				return nil, err
			}
		}
	}
	if err := l.StartAgent("host-a"); err != nil {
		return nil, err
	}
	model := lab.JoinYAML(lab.PoolYAML("bench", "10.65.0.0/16"), lab.NodeYAML(h), lab.EndpointYAML(ws[0]), lab.EndpointYAML(ws[1]))
	if _, err := l.Apply("", model); err != nil {
		return nil, err
	}
	if err := l.WaitPing(ws[0].NS, ws[1].IP.String(), 15*time.Second); err != nil {
		return nil, fmt.Errorf("calyx pair: %w", err)
	}
	if err := l.WaitPing(ws[2].NS, ws[3].IP.String(), 15*time.Second); err != nil {
		return nil, fmt.Errorf("kernel pair: %w", err)
	}

	res := &ThroughputResult{}
	for i := 0; i < runs; i++ {
		for _, pair := range []struct {
			src, dst *lab.Workload
			out      *[]float64
		}{{ws[0], ws[1], &res.BPFGbps}, {ws[2], ws[3], &res.KernelGbps}} {
			g, err := iperf(l, pair.src, pair.dst, seconds)
			if err != nil {
				return nil, err
			}
			*pair.out = append(*pair.out, g)
		}
	}
	return res, nil
}

func iperf(l *lab.Lab, src, dst *lab.Workload, seconds int) (float64, error) {
	rep, err := iperfReport(l, src, dst, seconds)
	if err != nil {
		return 0, err
	}
	return rep.BitsPerSecond / 1e9, nil
}

// iperfReport runs one iperf3 TCP stream src → dst for seconds.
func iperfReport(l *lab.Lab, src, dst *lab.Workload, seconds int) (lab.IperfReport, error) {
	srv, err := l.ExecBackground(dst.NS, time.Duration(seconds+30)*time.Second, "iperf3", "-s", "-1", "-B", dst.IP.String())
	if err != nil {
		return lab.IperfReport{}, err
	}
	defer srv.Stop(9, time.Second)
	if err := lab.WaitListening(l, dst.NS, 5201, 10*time.Second); err != nil {
		return lab.IperfReport{}, err
	}
	out, err := l.ExecTimeout(time.Duration(seconds+30)*time.Second, src.NS, "iperf3", "-c", dst.IP.String(), "-t", fmt.Sprint(seconds), "-J")
	if err != nil {
		return lab.IperfReport{}, err
	}
	return lab.ParseIperf(out.Stdout)
}
