package agent

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/calyxnet/calyx/model"
)

func testAgent(t *testing.T, ds model.Datastore) *Agent {
	t.Helper()
	return &Agent{
		cfg:      Config{Node: "host-a"},
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		ds:       ds,
		metrics:  newMetrics(),
		kick:     make(chan struct{}, 1),
		dsBack:   make(chan struct{}, 1),
		notReady: "starting",
	}
}

// Readiness follows the datastore: not ready with the reason while it is
// lost, and again only after a reconcile once it is back.
func TestReadinessFollowsDatastore(t *testing.T) {
	a := testAgent(t, nil)
	a.datastoreStatus(true, "") // the first outcome is reported too
	if ok, why := a.readiness(); ok || why != "starting" {
		t.Fatalf("before the first reconcile: %v %q", ok, why)
	}
	a.setReady(true, "")
	if ok, _ := a.readiness(); !ok {
		t.Fatal("not ready after a reconcile")
	}
	if got := gauge(a.metrics.ready); got != 1 {
		t.Errorf("calyx_ready = %v", got)
	}

	a.datastoreStatus(false, "context deadline exceeded")
	ok, why := a.readiness()
	if ok || why != "datastore unreachable: context deadline exceeded" {
		t.Fatalf("while lost: %v %q", ok, why)
	}
	if gauge(a.metrics.ready) != 0 || gauge(a.metrics.dsConnected) != 0 {
		t.Error("gauges do not show the outage")
	}
	// A reconcile of the last snapshot (an interface came and went) does
	// not make it ready while the datastore is lost.
	a.setReady(true, "")
	if ok, why := a.readiness(); ok || !strings.HasPrefix(why, "datastore unreachable") {
		t.Fatalf("reconciled while lost: %v %q", ok, why)
	}

	a.datastoreStatus(true, "")
	if ok, why := a.readiness(); ok || !strings.Contains(why, "resyncing") {
		t.Fatalf("back, before a reconcile: %v %q", ok, why)
	}
	select {
	case <-a.kick:
	default:
		t.Error("no reconcile asked for when the datastore came back")
	}
	if gauge(a.metrics.dsConnected) != 1 {
		t.Error("calyx_datastore_connected still 0")
	}
	a.setReady(true, "")
	if ok, _ := a.readiness(); !ok {
		t.Fatal("not ready after the reconcile that followed")
	}
}

// Registration creates the Node, fixes its address and keeps the rest.
func TestRegisterNode(t *testing.T) {
	ctx := context.Background()
	ds, err := model.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	a := testAgent(t, ds)
	addr := netip.MustParsePrefix("10.30.0.11/24")
	if err := a.registerAddress(ctx, "eth0", addr); err != nil {
		t.Fatal(err)
	}
	node := func() *model.Node {
		t.Helper()
		snap, err := ds.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, ok := snap.Nodes["host-a"]
		if !ok {
			t.Fatal("no node host-a")
		}
		return n
	}
	if n := node(); n.Spec.IPv4Address != addr {
		t.Fatalf("created %+v", n.Spec)
	}

	// An operator labels it and gives it an AS number; the host moves.
	n := node()
	n.Metadata.Labels = map[string]string{"rack": "r1"}
	n.Spec.ASNumber = 64512
	if err := ds.Apply(ctx, []model.Resource{n}); err != nil {
		t.Fatal(err)
	}
	moved := netip.MustParsePrefix("10.30.1.13/24")
	if err := a.registerAddress(ctx, "eth0", moved); err != nil {
		t.Fatal(err)
	}
	if n := node(); n.Spec.IPv4Address != moved || n.Metadata.Labels["rack"] != "r1" || n.Spec.ASNumber != 64512 {
		t.Fatalf("after the move: %+v %+v", n.Metadata, n.Spec)
	}
	// Nothing to do the next time.
	var v model.Versioned = ds
	_, rev, err := v.Get(ctx, model.Ref{Kind: model.KindNode, Name: "host-a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.registerAddress(ctx, "eth0", moved); err != nil {
		t.Fatal(err)
	}
	if _, rev2, _ := v.Get(ctx, model.Ref{Kind: model.KindNode, Name: "host-a"}); rev2 != rev {
		t.Errorf("an unchanged node was written again (revision %d -> %d)", rev, rev2)
	}
}

func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}
