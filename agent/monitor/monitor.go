// Package monitor fans the dataplane's drop events out to the clients of the
// agent's /monitor endpoint (`calyxctl monitor`): the flows policy denied,
// with the deciding rule; the packets Log rules matched; and every other
// dropped packet with its reason and flow. The dataplane sends them through
// its ring buffers within a per-CPU budget.
package monitor

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/calyxnet/calyx/bpfmap"
)

// The kinds of Event.
const (
	// KindPolicyDeny is a new flow policy denied: Rule is the rule that
	// decided (a policy's rule, or the default deny).
	KindPolicyDeny = "policy-deny"
	// KindPolicyLog is a packet a Log rule matched; Allowed says how the
	// policy went on to decide.
	KindPolicyLog = "policy-log"
	// KindDrop is a packet dropped for Reason on Interface, with the flow
	// its start showed (none for what is not IP, or too short to tell).
	KindDrop = "drop"
)

// Event is one line of `calyxctl monitor -o json`.
type Event struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Reason    string    `json:"reason"`
	Interface string    `json:"interface,omitempty"`
	Endpoint  string    `json:"endpoint,omitempty"`
	Proto     string    `json:"proto,omitempty"` // tcp, udp, icmp, icmpv6, arp, or the IP protocol number
	Src       string    `json:"src,omitempty"`
	Dst       string    `json:"dst,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	Allowed   *bool     `json:"allowed,omitempty"`
	Packets   uint64    `json:"packets"`
	Bytes     uint32    `json:"bytes,omitempty"` // a dropped packet's length
}

// Filter selects events; an empty field matches everything.
type Filter struct {
	Endpoint string // the endpoint's name
	Reason   string // a verdict reason, e.g. drop-policy
	Proto    string // tcp, udp, icmp, icmpv6, arp
}

// Match says whether e passes f.
func (f Filter) Match(e Event) bool {
	return (f.Endpoint == "" || f.Endpoint == e.Endpoint) && (f.Reason == "" || f.Reason == e.Reason) &&
		(f.Proto == "" || f.Proto == e.Proto)
}

// Query is the filter as /monitor's query parameters.
func (f Filter) Query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"endpoint": f.Endpoint, "reason": f.Reason, "proto": f.Proto} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// Protos are the protocol names a filter accepts.
var Protos = []string{"tcp", "udp", "icmp", "icmpv6", "arp"}

// IsReason says whether name is a verdict reason (bpfmap.Reason's names),
// or "log", the reason of KindPolicyLog events.
func IsReason(name string) bool {
	_, ok := bpfmap.ReasonByName(name)
	return ok || name == ReasonLog
}

// ReasonLog is the reason of a KindPolicyLog event (no verdict: the packet
// goes on as the policy decides).
const ReasonLog = "log"

// ParseFilter reads a filter from /monitor's query parameters (calyxctl
// monitor's flags): an unknown parameter, reason (IsReason) or protocol is
// an error naming it.
func ParseFilter(q url.Values) (Filter, error) {
	for k := range q {
		if k != "endpoint" && k != "reason" && k != "proto" {
			return Filter{}, fmt.Errorf("monitor filter %q: unknown; want endpoint, reason or proto", k)
		}
	}
	f := Filter{Endpoint: q.Get("endpoint"), Reason: q.Get("reason"), Proto: strings.ToLower(q.Get("proto"))}
	if f.Reason != "" && !IsReason(f.Reason) {
		return Filter{}, fmt.Errorf("monitor filter reason %q: not a verdict reason (see calyxctl counters dump)", f.Reason)
	}
	if f.Proto != "" && !contains(Protos, f.Proto) {
		return Filter{}, fmt.Errorf("monitor filter proto %q: want one of %s", f.Proto, strings.Join(Protos, ", "))
	}
	return f, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Hub hands each published event to every subscriber whose filter it
// passes. A subscriber that does not keep up loses events, never holds up
// the others or the publisher; Lost counts them.
type Hub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
	lost atomic.Uint64
}

type subscriber struct {
	filter Filter
	ch     chan Event
}

// NewHub returns a hub with no subscribers.
func NewHub() *Hub { return &Hub{subs: map[*subscriber]struct{}{}} }

// Subscribe returns a channel of the events passing f, buffered for buf,
// and the function that ends the subscription (and closes the channel).
func (h *Hub) Subscribe(f Filter, buf int) (<-chan Event, func()) {
	s := &subscriber{filter: f, ch: make(chan Event, buf)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
			close(s.ch)
		})
	}
}

// Watched says whether anyone subscribes: drop counts are read only then.
func (h *Hub) Watched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

// Lost is how many events subscribers that fell behind did not get.
func (h *Hub) Lost() uint64 { return h.lost.Load() }

// Publish hands e to every subscriber it passes, without waiting.
func (h *Hub) Publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.filter.Match(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			h.lost.Add(1)
		}
	}
}

// Path is where the agent serves Handler.
const Path = "/monitor"

// Handler serves GET Path?endpoint=&reason=&proto= as JSON lines, one Event
// each, flushed as they come, until the client goes.
func (h *Hub) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := ParseFilter(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "monitor: the connection cannot stream", http.StatusInternalServerError)
			return
		}
		events, stop := h.Subscribe(f, 1024)
		defer stop()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		fl.Flush()
		enc := json.NewEncoder(w)
		for {
			select {
			case <-r.Context().Done():
				return
			case e := <-events:
				if err := enc.Encode(e); err != nil {
					return
				}
				fl.Flush()
			}
		}
	})
}

// FlowOf reads the flow of a dropped packet from its start (Ethernet on):
// the protocol, and the source and destination with their ports (ICMP
// and anything without ports: the addresses alone; ARP: the sender and
// target addresses). What it cannot decode gives empty strings.
func FlowOf(head []byte) (proto, src, dst string) {
	p := gopacket.NewPacket(head, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	if a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
		s, _ := netip.AddrFromSlice(a.SourceProtAddress)
		d, _ := netip.AddrFromSlice(a.DstProtAddress)
		return "arp", s.String(), d.String()
	}
	var sa, da netip.Addr
	var next uint8
	switch ip := p.NetworkLayer().(type) {
	case *layers.IPv4:
		sa, _ = netip.AddrFromSlice(ip.SrcIP)
		da, _ = netip.AddrFromSlice(ip.DstIP)
		next = uint8(ip.Protocol)
	case *layers.IPv6:
		sa, _ = netip.AddrFromSlice(ip.SrcIP)
		da, _ = netip.AddrFromSlice(ip.DstIP)
		next = uint8(ip.NextHeader)
	default:
		return "", "", ""
	}
	if !sa.IsValid() || !da.IsValid() {
		return "", "", "" // cut short before its addresses
	}
	proto = bpfmap.ProtoName(next)
	switch l4 := p.TransportLayer().(type) {
	case *layers.TCP:
		proto = "tcp"
		return proto, netip.AddrPortFrom(sa, uint16(l4.SrcPort)).String(), netip.AddrPortFrom(da, uint16(l4.DstPort)).String()
	case *layers.UDP:
		proto = "udp"
		return proto, netip.AddrPortFrom(sa, uint16(l4.SrcPort)).String(), netip.AddrPortFrom(da, uint16(l4.DstPort)).String()
	}
	return proto, sa.String(), da.String()
}
