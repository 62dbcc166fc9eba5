package monitor

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestFilter(t *testing.T) {
	deny := Event{Kind: KindPolicyDeny, Reason: "drop-policy", Endpoint: "web-1", Proto: "tcp"}
	count := Event{Kind: KindDrop, Reason: "drop-spoof-ip", Endpoint: "web-1"}
	for _, tc := range []struct {
		f           Filter
		deny, count bool
	}{
		{Filter{}, true, true},
		{Filter{Endpoint: "web-1"}, true, true},
		{Filter{Endpoint: "db-1"}, false, false},
		{Filter{Reason: "drop-policy"}, true, false},
		{Filter{Proto: "tcp"}, true, false}, // a count carries no protocol
	} {
		if got := tc.f.Match(deny); got != tc.deny {
			t.Errorf("%+v matches the deny: %v, want %v", tc.f, got, tc.deny)
		}
		if got := tc.f.Match(count); got != tc.count {
			t.Errorf("%+v matches the count: %v, want %v", tc.f, got, tc.count)
		}
	}
}

// A bad filter is refused naming what is wrong; a good one round-trips
// through its query.
func TestParseFilter(t *testing.T) {
	for q, want := range map[string]string{
		"color=red":           `"color": unknown`,
		"reason=drop-sadness": `reason "drop-sadness": not a verdict reason`,
		"proto=sctp":          `proto "sctp": want one of tcp, udp, icmp, icmpv6`,
	} {
		v, _ := url.ParseQuery(q)
		if _, err := ParseFilter(v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", q, err, want)
		}
	}
	f := Filter{Endpoint: "web-1", Reason: "log", Proto: "icmpv6"}
	got, err := ParseFilter(f.Query())
	if err != nil || got != f {
		t.Errorf("round trip: %+v %v, want %+v", got, err, f)
	}
}

// A subscriber that does not read loses events (counted) and holds up no
// one; an ended subscription is closed and gets nothing more.
func TestHubSlowSubscriber(t *testing.T) {
	h := NewHub()
	slow, stopSlow := h.Subscribe(Filter{}, 1)
	fast, stopFast := h.Subscribe(Filter{Reason: "drop-policy"}, 10)
	for range 3 {
		h.Publish(Event{Kind: KindPolicyDeny, Reason: "drop-policy"})
	}
	h.Publish(Event{Kind: KindDrop, Reason: "drop-spoof-ip"})
	if len(fast) != 3 || len(slow) != 1 || h.Lost() != 3 {
		t.Errorf("fast got %d (want 3), slow %d (want 1), lost %d (want 3)", len(fast), len(slow), h.Lost())
	}
	stopSlow()
	stopFast()
	if h.Watched() {
		t.Error("watched after every subscription ended")
	}
	h.Publish(Event{Kind: KindDrop})
}

// The handler streams each event as a JSON line as it comes, filtered, and
// refuses a bad filter with 400.
func TestHandlerStreams(t *testing.T) {
	h := NewHub()
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	if resp, err := http.Get(srv.URL + "?proto=sctp"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad filter: %v %v, want 400", resp, err)
	}
	resp, err := http.Get(srv.URL + "?endpoint=web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for !h.Watched() {
		time.Sleep(time.Millisecond)
	}
	h.Publish(Event{Kind: KindDrop, Reason: "drop-spoof-ip", Endpoint: "db-1", Packets: 1})
	h.Publish(Event{Kind: KindPolicyDeny, Reason: "drop-policy", Endpoint: "web-1", Rule: "default deny ingress", Packets: 1})
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var e Event
	if err := json.Unmarshal(line, &e); err != nil || e.Endpoint != "web-1" || e.Rule != "default deny ingress" {
		t.Errorf("first line %s (%v): want web-1's deny", line, err)
	}
}

// FlowOf reads a dropped packet's flow from its start: ports for TCP and
// UDP, addresses alone for ICMP, sender and target for ARP, nothing for a
// runt.
func TestFlowOf(t *testing.T) {
	eth := func(typ layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: typ}
	}
	ser := func(ls ...gopacket.SerializableLayer) []byte {
		b := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: []byte{10, 65, 0, 2}, DstIP: []byte{10, 65, 0, 3}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 22, SYN: true}
	_ = tcp.SetNetworkLayerForChecksum(ip4)
	ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
		SrcIP: netip.MustParseAddr("fd00::2").AsSlice(), DstIP: netip.MustParseAddr("fd00::3").AsSlice()}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	_ = udp.SetNetworkLayerForChecksum(ip6)
	icmp4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: []byte{10, 65, 0, 99}, DstIP: []byte{10, 65, 0, 3}}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: 1, SourceHwAddress: []byte{2, 0, 0, 0, 0, 1}, SourceProtAddress: []byte{10, 65, 0, 2},
		DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 65, 0, 1}}
	for name, tc := range map[string]struct {
		head            []byte
		proto, src, dst string
	}{
		"tcp":  {ser(eth(layers.EthernetTypeIPv4), ip4, tcp), "tcp", "10.65.0.2:40000", "10.65.0.3:22"},
		"udp6": {ser(eth(layers.EthernetTypeIPv6), ip6, udp), "udp", "[fd00::2]:5353", "[fd00::3]:53"},
		"icmp": {ser(eth(layers.EthernetTypeIPv4), icmp4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}), "icmp", "10.65.0.99", "10.65.0.3"},
		"arp":  {ser(eth(layers.EthernetTypeARP), arp), "arp", "10.65.0.2", "10.65.0.1"},
		"runt": {ser(eth(layers.EthernetTypeIPv4), ip4, tcp)[:20], "", "", ""},
	} {
		p, s, d := FlowOf(tc.head)
		if p != tc.proto || s != tc.src || d != tc.dst {
			t.Errorf("%s: %q %q -> %q, want %q %q -> %q", name, p, s, d, tc.proto, tc.src, tc.dst)
		}
	}
}
