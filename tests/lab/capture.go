package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Bounds of a capture. A capture lives at most captureLifetime (it is meant
// to span a few pings or a transfer), and Stop waits captureSettle before
// interrupting tcpdump, because tcpdump stops reading its ring at the
// interrupt and would lose packets the kernel already handed it.
const (
	captureLifetime = 5 * time.Minute
	captureStart    = 10 * time.Second
	captureSettle   = 300 * time.Millisecond
)

// Capture is a tcpdump running in the background in one namespace.
type Capture struct {
	// NS, Iface and Filter are what the capture was started with.
	NS, Iface, Filter string
	proc              *Proc
}

// StartCapture starts "tcpdump -nn -l --immediate-mode -i IFACE FILTER" in
// namespace ns and returns once tcpdump reports that it is listening, so
// every packet sent after it returns is captured. The filter is a pcap
// expression ("" captures everything; "ip" keeps IPv4 and drops the IPv6
// and ARP chatter of the lab's interfaces). Stop it with Stop; Close stops
// forgotten captures.
func (l *Lab) StartCapture(ns, iface, filter string) (*Capture, error) {
	// -nn: addresses and ports as numbers, which the classifier relies on.
	// --immediate-mode: hand each packet over at once instead of when a
	// ring block fills, so a short capture is not empty at Stop.
	args := []string{"tcpdump", "-nn", "-l", "--immediate-mode", "-i", iface}
	if filter != "" {
		args = append(args, filter)
	}
	p, err := l.ExecBackground(ns, captureLifetime, args...)
	if err != nil {
		return nil, err
	}
	c := &Capture{NS: ns, Iface: iface, Filter: filter, proc: p}
	deadline := time.Now().Add(captureStart)
	for {
		_, errOut := p.Output()
		if strings.Contains(errOut, "listening on") {
			return c, nil
		}
		select {
		case <-p.Done():
			res, err := p.result()
			return nil, errors.Join(fmt.Errorf("tcpdump on %s in %s exited before listening: %s", iface, ns, tail(res.Combined(), 10)), err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_, _ = p.Stop(syscall.SIGKILL, time.Second)
			return nil, fmt.Errorf("tcpdump on %s in %s not listening after %s: %s", iface, ns, captureStart, tail(errOut, 10))
		}
	}
}

// Stop interrupts tcpdump and returns the captured packets, one string per
// packet (see ParseTcpdump). Calling it again returns the same packets.
func (c *Capture) Stop() ([]string, error) {
	select {
	case <-c.proc.Done():
	default:
		time.Sleep(captureSettle)
	}
	// SIGINT is tcpdump's normal way to finish: it flushes and exits 0.
	res, err := c.proc.Stop(syscall.SIGINT, 5*time.Second)
	pkts := ParseTcpdump(res.Stdout)
	if err != nil {
		return pkts, fmt.Errorf("capture on %s in %s: %w", c.Iface, c.NS, err)
	}
	return pkts, nil
}

// tsRE matches the timestamp tcpdump starts each packet with by default.
var tsRE = regexp.MustCompile(`^\d{2}:\d{2}:\d{2}\.\d+ `)

// ParseTcpdump splits tcpdump's output into one string per packet. tcpdump
// prints the inner frame of a VXLAN packet on a line of its own, without a
// timestamp; such continuation lines are appended to their packet after
// " | ".
func ParseTcpdump(out string) []string {
	var pkts []string
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimRight(line, " \r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !tsRE.MatchString(line) && len(pkts) > 0 {
			pkts[len(pkts)-1] += " | " + strings.TrimSpace(line)
			continue
		}
		pkts = append(pkts, line)
	}
	return pkts
}

// The classes ClassifyPacket returns.
const (
	PacketIPIP  = "ipip"
	PacketVXLAN = "vxlan"
	PacketPlain = "plain"
)

// ClassifyPacket says how one packet line of "tcpdump -nn" (with or without
// its timestamp) crossed the wire: PacketIPIP, PacketVXLAN, PacketPlain, or
// "" when it is neither IPv4 nor IPv6 (ARP). It reads what tcpdump 4.99
// prints:
//
//	IP 10.30.0.11 > 10.30.1.13: IP 10.65.1.2 > 10.65.3.2: ICMP echo request, ...   (IP-in-IP)
//	IP 10.30.0.11 > 10.30.1.13: IP6 fd00:65::2 > fd00:65::4: ICMP6, echo ...        (6in4: IPIP)
//	IP 10.30.0.11.40000 > 10.30.1.13.4789: VXLAN, flags [I] (0x08), vni 1 | IP ... (VXLAN)
//	IP 10.65.1.2 > 10.65.2.2: ICMP echo request, ...                               (plain)
//	IP6 fd00:65::2 > fd00:65::3: ICMP6, echo request, ...                           (plain)
//	IP6 2001:db8:a41:ff::11 > 2001:db8:a41:ff::12: IP6 fd00:65::2 > ...            (IPv6 in IPv6: IPIP)
//	IP6 2001:db8:a41:ff::11.40000 > 2001:db8:a41:ff::12.4789: VXLAN, ...           (VXLAN over IPv6)
//
// tcpdump decodes UDP port 4789 as VXLAN by itself; VXLAN on another port
// reads as plain UDP. An ICMP error quoting an IP-in-IP packet ("ICMP ...
// protocol 4 unreachable") is plain: it is not itself encapsulated.
func ClassifyPacket(line string) string {
	s := tsRE.ReplaceAllString(strings.TrimSpace(line), "")
	if !strings.HasPrefix(s, "IP ") && !strings.HasPrefix(s, "IP6 ") {
		return ""
	}
	// Addresses hold no ": " (IPv6 ones hold "::" and ":x"), so the
	// first one ends "IP src > dst".
	_, payload, _ := strings.Cut(s, ": ")
	switch {
	case strings.HasPrefix(payload, "VXLAN"):
		return PacketVXLAN
	case strings.HasPrefix(payload, "IP "), strings.HasPrefix(payload, "IP6 "), // IPv4 or IPv6 (6in4) inside
		// Older tcpdumps, or an inner packet too short to decode.
		strings.HasPrefix(payload, "ipip-proto-4"), strings.HasPrefix(payload, "ip-proto-4"),
		strings.HasPrefix(payload, "ip-proto-41"):
		return PacketIPIP
	}
	return PacketPlain
}

// CaptureShows counts the IPv4 packets among lines (one per packet, as Stop
// returns them) by how they crossed the wire; other packets are not
// counted.
func CaptureShows(lines []string) (ipip, vxlan, plain int) {
	for _, l := range lines {
		switch ClassifyPacket(l) {
		case PacketIPIP:
			ipip++
		case PacketVXLAN:
			vxlan++
		case PacketPlain:
			plain++
		}
	}
	return ipip, vxlan, plain
}

// PacketsMentioning returns the packets in which addr appears as an address
// (outer or inner), so one capture can be split by destination workload.
func PacketsMentioning(lines []string, addr netip.Addr) []string {
	// An address ends at ":", " ", "," or the "." before a port, never at a
	// digit: 10.65.3.2 must not match 10.65.3.25.
	re := regexp.MustCompile(`(^|[ >(])` + regexp.QuoteMeta(addr.String()) + `([.:, ]|$)`)
	var out []string
	for _, l := range lines {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}
