package lab

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Eventually calls f every interval until it returns nil or timeout has
// passed, and returns nil or f's last error. f is always called at least once.
func Eventually(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().Add(interval).After(deadline) {
			return fmt.Errorf("still failing after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// PingStats is ping's summary.
type PingStats struct {
	Transmitted, Received int
	// From lists the distinct addresses replies came from, in the order
	// first seen ("64 bytes from ADDR: ..."): behind a NAT, the address the
	// sender sees answering.
	From []string
	// Output is ping's whole output.
	Output string
}

// Loss returns the fraction of packets lost (0..1); 1 when none were sent.
func (s PingStats) Loss() float64 {
	if s.Transmitted == 0 {
		return 1
	}
	return float64(s.Transmitted-s.Received) / float64(s.Transmitted)
}

var (
	pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingReplyRE   = regexp.MustCompile(`(?m)^\d+ bytes from ([0-9a-fA-F.:]+?):? icmp_seq=`)
)

// ParsePing extracts the transmitted/received counts from ping's output.
func ParsePing(out string) (PingStats, error) {
	m := pingSummaryRE.FindStringSubmatch(out)
	if m == nil {
		return PingStats{Output: out}, fmt.Errorf("no ping summary in output: %s", tail(out, 5))
	}
	tx, _ := strconv.Atoi(m[1])
	rx, _ := strconv.Atoi(m[2])
	st := PingStats{Transmitted: tx, Received: rx, Output: out}
	for _, r := range pingReplyRE.FindAllStringSubmatch(out, -1) {
		if !slices.Contains(st.From, r[1]) {
			st.From = append(st.From, r[1])
		}
	}
	return st, nil
}

// Ping sends count echo requests (0.2s apart, 1s reply wait) from namespace
// ns to dst, with extra ping flags before the destination (e.g. "-I",
// "10.65.0.99"). The error is nil only when every request was answered; the
// stats are filled in whenever ping printed a summary.
func (l *Lab) Ping(ns, dst string, count int, extra ...string) (PingStats, error) {
	args := []string{"ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1"}
	args = append(append(args, extra...), dst)
	timeout := time.Duration(count)*300*time.Millisecond + 5*time.Second
	res, runErr := l.Run(Command{NS: ns, Args: args, Timeout: timeout})
	st, err := ParsePing(res.Stdout)
	if err != nil {
		if runErr != nil {
			return st, runErr
		}
		return st, err
	}
	if st.Received != st.Transmitted || st.Transmitted != count {
		return st, fmt.Errorf("ping %s from %s: %d/%d answered", dst, ns, st.Received, st.Transmitted)
	}
	return st, nil
}

// WaitPing pings dst from ns once per attempt until a reply comes back or
// timeout passes; use it before strict assertions, because the first
// packets may race with the agent attaching or with neighbour resolution.
func (l *Lab) WaitPing(ns, dst string, timeout time.Duration, extra ...string) error {
	return Eventually(timeout, 200*time.Millisecond, func() error {
		_, err := l.Ping(ns, dst, 1, extra...)
		return err
	})
}

// WaitNoPing pings dst from ns once per attempt until a request goes
// unanswered or timeout passes.
func (l *Lab) WaitNoPing(ns, dst string, timeout time.Duration, extra ...string) error {
	return Eventually(timeout, 200*time.Millisecond, func() error {
		st, err := l.Ping(ns, dst, 1, extra...)
		if err != nil && st.Transmitted > 0 && st.Received == 0 {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("ping %s from %s still answered", dst, ns)
	})
}

// WaitLinks waits until "calyxctl links" on host lists every interface in
// ifaces.
func (l *Lab) WaitLinks(host string, timeout time.Duration, ifaces ...string) error {
	return Eventually(timeout, 200*time.Millisecond, func() error {
		links, err := l.Links(host)
		if err != nil {
			return err
		}
		var missing []string
		for _, ifc := range ifaces {
			if len(LinksFor(links, ifc)) == 0 {
				missing = append(missing, ifc)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("calyxctl links on %s does not list %s", host, strings.Join(missing, ", "))
		}
		return nil
	})
}

// WaitNoLinks waits until "calyxctl links" on host lists none of ifaces.
func (l *Lab) WaitNoLinks(host string, timeout time.Duration, ifaces ...string) error {
	return Eventually(timeout, 200*time.Millisecond, func() error {
		links, err := l.Links(host)
		if err != nil {
			return err
		}
		for _, ifc := range ifaces {
			if ls := LinksFor(links, ifc); len(ls) > 0 {
				return fmt.Errorf("calyxctl links on %s still lists %s (%d links)", host, ifc, len(ls))
			}
		}
		return nil
	})
}
