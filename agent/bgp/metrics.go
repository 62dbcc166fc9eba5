package bgp

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/calyxnet/calyx/agent/bgpstatus"
)

var (
	descPeerUp = prometheus.NewDesc("calyx_bgp_peer_up",
		"1 when the BGP session with the peer is Established, 0 otherwise.", []string{"peer", "type"}, nil)
	descAdvertised = prometheus.NewDesc("calyx_bgp_prefixes_advertised",
		"Prefixes advertised to the peer.", []string{"peer"}, nil)
	descReceived = prometheus.NewDesc("calyx_bgp_prefixes_received",
		"Prefixes received from the peer.", []string{"peer"}, nil)
	descFlaps = prometheus.NewDesc("calyx_bgp_session_flaps_total",
		"Times the session with the peer left the Established state.", []string{"peer"}, nil)
	descSession = prometheus.NewDesc("calyx_bgp_session_state",
		"The BGP FSM state of the session with the peer: 1 for the state it is in, 0 for the others (Idle, Connect, Active, OpenSent, OpenConfirm, Established).",
		[]string{"peer", "state"}, nil)
)

// metrics reads the speaker's peer table at scrape time.
type metrics struct{ s *Speaker }

func newMetrics(s *Speaker) *metrics { return &metrics{s: s} }

func (m *metrics) Describe(ch chan<- *prometheus.Desc) { Describe(ch) }

// Describe sends the descriptions of the speaker's metrics, for a collector
// that stands in for a Speaker not started yet.
func Describe(ch chan<- *prometheus.Desc) {
	ch <- descPeerUp
	ch <- descAdvertised
	ch <- descReceived
	ch <- descFlaps
	ch <- descSession
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, p := range m.s.Peers() {
		a := p.Address.String()
		up := 0.0
		if p.Established {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descPeerUp, prometheus.GaugeValue, up, a, p.Type)
		ch <- prometheus.MustNewConstMetric(descAdvertised, prometheus.GaugeValue, float64(p.PrefixesAdvertised), a)
		ch <- prometheus.MustNewConstMetric(descReceived, prometheus.GaugeValue, float64(p.PrefixesReceived), a)
		ch <- prometheus.MustNewConstMetric(descFlaps, prometheus.CounterValue, float64(p.SessionFlaps), a)
		for _, st := range bgpstatus.SessionStates {
			in := 0.0
			if st == p.Session {
				in = 1
			}
			ch <- prometheus.MustNewConstMetric(descSession, prometheus.GaugeValue, in, a, st)
		}
	}
}

// Collectors returns the speaker's Prometheus collectors: calyx_bgp_peer_up{peer,type},
// calyx_bgp_prefixes_advertised{peer}, calyx_bgp_prefixes_received{peer},
// calyx_bgp_session_flaps_total{peer} and calyx_bgp_session_state{peer,state}, read from the peer table at each scrape (none
// while the speaker is stopped). Register them once per Speaker.
func (s *Speaker) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics}
}
