package subnetsvc

import "github.com/prometheus/client_golang/prometheus"

// Why a request got no answer: the reason label of
// calyx_dhcp_ignored_total.
const (
	// The interface is not a local endpoint interface the agent told the
	// server about (a DHCP broadcast on the underlay NIC, say).
	reasonNotEndpoint = "not_endpoint"
	// The endpoint has no lease in the request's family (no address in a
	// Subnet with DHCP enabled).
	reasonNoLease = "no_lease"
	// The frame's source MAC, the chaddr or the DUID's link-layer address
	// is not the endpoint's MAC.
	reasonWrongMAC = "wrong_mac"
	// Not a well-formed request (cut short, bad options, bad header).
	reasonMalformed = "malformed"
	// Sent to another server's unicast address, from a relay, or from the
	// wrong port: someone else's conversation.
	reasonNotForUs = "not_for_us"
	// A DHCPv6 message naming another server's DUID.
	reasonOtherServer = "other_server"
	// A message type a server does not answer (replies, relay messages,
	// BOOTP without a DHCP message type).
	reasonUnsupported = "unsupported"
	// A RELEASE/DECLINE of an address that is not the endpoint's.
	reasonNotLeased = "not_leased"
)

var ignoreReasons = []string{reasonNotEndpoint, reasonNoLease, reasonWrongMAC, reasonMalformed,
	reasonNotForUs, reasonOtherServer, reasonUnsupported, reasonNotLeased}

// The type label of calyx_dhcp_messages_total: received client messages,
// sent replies, and requests left unanswered.
var (
	v4Types = []string{"discover", "request", "release", "decline", "inform", "offer", "ack", "nak", "ignored"}
	v6Types = []string{"solicit", "request", "confirm", "renew", "rebind", "release", "decline",
		"information_request", "advertise", "reply", "ignored"}
)

type metrics struct {
	messages   *prometheus.CounterVec
	ignored    *prometheus.CounterVec
	ras        *prometheus.CounterVec
	rss        *prometheus.CounterVec
	sendErrors *prometheus.CounterVec
	interfaces *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_dhcp_messages_total",
			Help: "DHCP messages by family (v4, v6) and type: client messages received from an endpoint's own MAC " +
				"(discover, request, release, decline, inform; solicit, request, confirm, renew, rebind, release, decline, information_request), " +
				"replies sent (offer, ack, nak; advertise, reply), and ignored: requests left unanswered (calyx_dhcp_ignored_total says why).",
		}, []string{"family", "type"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_dhcp_ignored_total",
			Help: "DHCP requests and router solicitations left unanswered, by family and reason: not_endpoint (interface is no local endpoint), " +
				"no_lease (endpoint has no address in a DHCP-enabled subnet of that family), wrong_mac (frame source, chaddr or DUID is not the endpoint's MAC), " +
				"malformed, not_for_us (unicast to another server, relayed, wrong port), other_server (DHCPv6 naming another server's DUID), " +
				"unsupported (message type a server does not answer), not_leased (release/decline of an address that is not the endpoint's).",
		}, []string{"family", "reason"}),
		ras: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_router_advertisements_total",
			Help: "Router advertisements sent to endpoints: periodic (unsolicited, to ff02::1), solicited (answer to a router solicitation), " +
				"final (router lifetime 0, when an interface's IPv6 service goes away).",
		}, []string{"reason"}),
		rss: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_router_solicitations_total",
			Help: "Router solicitations received on endpoint interfaces, by result: answered, ignored (see calyx_dhcp_ignored_total{family=\"v6\"}), " +
				"rate_limited (another came from the same interface less than 300 ms before).",
		}, []string{"result"}),
		sendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_dhcp_send_errors_total",
			Help: "Replies and router advertisements the packet socket failed to send (interface gone or down), by family.",
		}, []string{"family"}),
		interfaces: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "calyx_dhcp_interfaces",
			Help: "Endpoint interfaces the subnet services answer on, by family (v4: DHCPv4; v6: router advertisements and DHCPv6).",
		}, []string{"family"}),
	}
	// Every series exists from the start, so a dashboard sees 0, not
	// nothing.
	for _, t := range v4Types {
		m.messages.WithLabelValues("v4", t)
	}
	for _, t := range v6Types {
		m.messages.WithLabelValues("v6", t)
	}
	for _, fam := range []string{"v4", "v6"} {
		for _, r := range ignoreReasons {
			m.ignored.WithLabelValues(fam, r)
		}
		m.sendErrors.WithLabelValues(fam)
		m.interfaces.WithLabelValues(fam)
	}
	for _, r := range []string{"periodic", "solicited", "final"} {
		m.ras.WithLabelValues(r)
	}
	for _, r := range []string{"answered", "ignored", "rate_limited"} {
		m.rss.WithLabelValues(r)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.messages, m.ignored, m.ras, m.rss, m.sendErrors, m.interfaces}
}

// Describe sends the descriptions of a Server's metrics without one (a
// Server needs raw sockets): the list of what the agent can export that its
// dashboard is checked against.
func Describe(ch chan<- *prometheus.Desc) {
	for _, c := range newMetrics().collectors() {
		c.Describe(ch)
	}
}

// ignore counts a request left unanswered.
func (m *metrics) ignore(fam, reason string) {
	m.messages.WithLabelValues(fam, "ignored").Inc()
	m.ignored.WithLabelValues(fam, reason).Inc()
}
