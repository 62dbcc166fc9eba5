package metadataproxy

import "github.com/prometheus/client_golang/prometheus"

// The result label of calyx_metadata_requests_total.
const (
	// The metadata service answered (whatever its status).
	resultForwarded = "forwarded"
	// The metadata service could not be reached or did not answer in time.
	resultUpstreamError = "upstream_error"
	// The request body was over MaxBody.
	resultTooLarge = "too_large"
	// A method the service does not serve, or a body that could not be
	// read.
	resultRefused = "refused"
)

type metrics struct {
	requests     *prometheus.CounterVec
	listeners    prometheus.Gauge
	listenErrors prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calyx_metadata_requests_total",
			Help: "Requests to the IPv6 metadata proxy ([fe80::a9fe:a9fe]:80 on endpoint interfaces), by result: forwarded " +
				"(the metadata service answered), upstream_error (it could not be reached or did not answer), too_large " +
				"(request body over 64 KiB), refused (method other than GET, HEAD, POST, or an unreadable body).",
		}, []string{"result"}),
		listeners: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "calyx_metadata_listeners",
			Help: "Endpoint interfaces the IPv6 metadata proxy listens on.",
		}),
		listenErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "calyx_metadata_listen_errors_total",
			Help: "Attempts to listen on an endpoint interface for the IPv6 metadata proxy that failed (each is tried again at the next sync).",
		}),
	}
	// Every series exists from the start, so a dashboard sees 0, not
	// nothing.
	for _, r := range []string{resultForwarded, resultUpstreamError, resultTooLarge, resultRefused} {
		m.requests.WithLabelValues(r)
	}
	return m
}

// Collectors returns the proxy's metrics, for the agent's registry.
func (p *Proxy) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.m.requests, p.m.listeners, p.m.listenErrors}
}
