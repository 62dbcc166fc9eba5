package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calyxnet/calyx/agent/monitor"
	"github.com/calyxnet/calyx/bpfmap"
)

// registerMonitorMetrics exports what the monitor's budgets cost: policy
// events the dataplane's per-CPU budget suppressed, and events /monitor
// clients that fell behind did not get.
func (a *Agent) registerMonitorMetrics(m *bpfmap.Maps) {
	a.metrics.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "calyx_monitor_events_suppressed_total",
			Help: "Events (drops, policy denies, Log rule matches) the dataplane did not send: over a CPU's budget of 256 a second."},
			func() float64 {
				n, err := m.EventsSuppressed()
				if err != nil {
					return 0
				}
				return float64(n)
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "calyx_monitor_events_lost_total",
			Help: "Monitor events a /monitor client (calyxctl monitor) that fell behind did not get."},
			func() float64 { return float64(a.monitor.Lost()) }),
	)
}

// ruleName names rule number id as calyxctl policy dump does: a policy's
// "NAME ingress[0]", or the default deny of a direction.
func (a *Agent) ruleName(id uint32) string {
	a.rulesMu.Lock()
	ri, ok := a.rules[id]
	a.rulesMu.Unlock()
	switch {
	case !ok:
		return fmt.Sprintf("rule %d", id)
	case ri.Policy == "":
		return "default deny " + strings.ToLower(string(ri.Direction))
	}
	return fmt.Sprintf("%s %s[%d]", ri.Policy, strings.ToLower(string(ri.Direction)), ri.Index)
}

// endpointOf names the endpoint of workload interface ifindex, as the last
// reconcile knew it ("" for none).
func (a *Agent) endpointOf(ifindex uint32) string {
	ei, _ := a.metrics.ifaces.get(ifindex)
	return ei.endpoint
}

// policyEvent is the monitor's event for a dataplane policy event.
func (a *Agent) policyEvent(ev bpfmap.PolicyEvent, rule string) monitor.Event {
	e := monitor.Event{Time: time.Now(), Kind: monitor.KindPolicyDeny, Reason: bpfmap.ReasonDropPolicy.String(),
		Interface: interfaceName(ev.Ifindex), Endpoint: a.endpointOf(ev.Ifindex), Proto: bpfmap.ProtoName(ev.Proto),
		Src: ev.Src.String(), Dst: ev.Dst.String(), Rule: rule, Packets: 1}
	if bpfmap.IsICMP(ev.Proto) {
		// The port of an ICMP tuple is type<<8 | code: addresses alone.
		e.Src, e.Dst = ev.Src.Addr().String(), ev.Dst.Addr().String()
	}
	if ev.Kind == bpfmap.PolicyEventLog {
		allowed := ev.Allowed
		e.Kind, e.Allowed = monitor.KindPolicyLog, &allowed
		e.Reason = monitor.ReasonLog
	}
	return e
}

// monitorDrops publishes each drop the dataplane reports (cx_drop_log),
// with the flow read from the packet's start, until ctx ends.
func (a *Agent) monitorDrops(ctx context.Context) {
	r, err := a.dp.Maps.DropLog()
	readRing(ctx, a.log, "drop events", r, err, func(ev bpfmap.DropEvent) {
		if !a.monitor.Watched() {
			return
		}
		e := monitor.Event{Time: time.Now(), Kind: monitor.KindDrop, Reason: ev.Reason.String(),
			Interface: interfaceName(ev.Ifindex), Endpoint: a.endpointOf(ev.Ifindex), Packets: 1, Bytes: ev.Len}
		e.Proto, e.Src, e.Dst = monitor.FlowOf(ev.Head)
		a.monitor.Publish(e)
	})
}

// readRing hands each event r reads (err: opening it failed) to handle,
// until ctx ends; what names the events in the log.
func readRing[T any](ctx context.Context, log *slog.Logger, what string, r *bpfmap.RingReader[T], err error, handle func(T)) {
	if err != nil {
		log.Error(what+" unavailable", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		r.Close()
	}()
	for {
		ev, err := r.Read()
		if err != nil {
			if ctx.Err() == nil {
				log.Error(what+" stopped", "err", err)
			}
			return
		}
		handle(ev)
	}
}
