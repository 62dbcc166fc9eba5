package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/etcdtest"
)

func TestDeadNodesObserve(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	live := func(ns ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range ns {
			m[n] = true
		}
		return m
	}
	d := deadNodes{grace: 10 * time.Second}
	for i, step := range []struct {
		at      int
		live    map[string]bool
		holders []string
		dead    []string
	}{
		// Just started: b has been absent as long as we know, which is
		// not long yet.
		{0, live("a"), []string{"b", "a", "b"}, nil},
		{10, live("a"), []string{"b", "a", "b"}, nil},
		{11, live("a"), []string{"b", "a"}, []string{"b"}},
		// While self is not live its view is in doubt: no one is dead,
		// and the history stays.
		{12, live(), []string{"b", "a"}, nil},
		{13, live("a"), []string{"b", "a"}, []string{"b"}},
		// b live again: its clock starts over when it goes again.
		{14, live("a", "b"), []string{"b"}, nil},
		{15, live("a"), []string{"b"}, nil},
		{25, live("a"), []string{"b"}, nil},
		{26, live("a"), []string{"c", "b"}, []string{"b"}},
		// A node that no longer holds blocks is forgotten.
		{40, live("a"), []string{"c"}, []string{"c"}},
		{41, live("a"), []string{"c", "b"}, []string{"c"}},
		{52, live("a"), []string{"b", "c"}, []string{"b", "c"}},
		// Self is never dead to itself.
		{60, live("b"), []string{"a"}, nil},
	} {
		if got := d.observe(at(step.at), "a", step.live, step.holders); !slices.Equal(got, step.dead) {
			t.Errorf("look %d at %ds: dead %v, want %v", i, step.at, got, step.dead)
		}
	}
	// After a failed look no one is known to have stayed absent.
	d.forget()
	if got := d.observe(at(100), "a", live("a"), []string{"b"}); got != nil {
		t.Errorf("after forget: dead %v", got)
	}
	if got := d.observe(at(111), "a", live("a"), []string{"b"}); !slices.Equal(got, []string{"b"}) {
		t.Errorf("a grace after forget: dead %v, want [b]", got)
	}
}

func TestLookInterval(t *testing.T) {
	for _, tc := range []struct {
		graces []time.Duration
		want   time.Duration
	}{
		{[]time.Duration{0, 0}, 0},
		{[]time.Duration{15 * time.Minute, 10 * time.Minute}, 150 * time.Second},
		{[]time.Duration{0, 2 * time.Second}, time.Second},
		{[]time.Duration{8 * time.Second, 0}, 2 * time.Second},
	} {
		if got := lookInterval(tc.graces...); got != tc.want {
			t.Errorf("lookInterval(%v) = %v, want %v", tc.graces, got, tc.want)
		}
	}
}

// A file datastore has no liveness: the releaser turns itself off.
func TestDeadNodeReleaserFileStore(t *testing.T) {
	ds, err := model.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	r := newDeadNodeReleaser("a", time.Second, ds, slog.New(slog.DiscardHandler), newMetrics())
	if err := r.step(context.Background(), time.Now()); err != nil || !r.off {
		t.Errorf("step on a file store: %v, off %v; want nil and off", err, r.off)
	}
}

// Node b's lease lapses; after the grace exactly one of the surviving
// agents a and c, running their passes at the same time, gives back b's
// unused block and the unused allocations of the block b's endpoint still
// uses. b coming back before the grace releases nothing.
func TestDeadNodeBlocksReleased(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	prefix := fmt.Sprintf("/test-deadnode-%d", time.Now().UnixNano())
	open := func() *model.EtcdStore {
		ds, err := model.OpenEtcd(srv.Endpoints(), model.WithEtcdPrefix(prefix), model.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ds.Close() })
		return ds
	}
	stores := map[string]*model.EtcdStore{"a": open(), "b": open(), "c": open()}
	ds := stores["a"]
	nodes := []model.Resource{&model.IPPool{Metadata: model.Metadata{Name: "p"},
		Spec: model.IPPoolSpec{CIDR: netip.MustParsePrefix("10.65.0.0/24"), BlockSize: 28}}}
	for i, n := range []string{"a", "b", "c"} {
		nodes = append(nodes, &model.Node{Metadata: model.Metadata{Name: n},
			Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix(fmt.Sprintf("10.30.0.%d/24", 10+i))}})
	}
	if err := ds.Apply(ctx, nodes); err != nil {
		t.Fatal(err)
	}
	// b: 10.65.0.0/28 with vm-1 (its endpoint exists) and vm-2 (none);
	// 10.65.0.16/28 with vm-3 (no endpoint). a: 10.65.0.32/28, vm-a.
	for _, n := range []string{"b", "b", "a"} {
		if _, err := ipam.ClaimBlock(ctx, ds, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []struct{ node, handle string }{{"b", "vm-1"}, {"b", "vm-2"}, {"a", "vm-a"}} {
		if _, err := ipam.Allocate(ctx, ds, h.node, h.handle); err != nil {
			t.Fatal(err)
		}
	}
	unusedRef := model.Ref{Kind: model.KindIPAMBlock, Name: model.BlockName(netip.MustParsePrefix("10.65.0.16/28"))}
	r, rev, err := ds.Get(ctx, unusedRef)
	if err != nil {
		t.Fatal(err)
	}
	unused := *r.(*model.IPAMBlock)
	unused.Spec.Allocations = map[netip.Addr]string{netip.MustParseAddr("10.65.0.17"): "vm-3"}
	if err := ds.Update(ctx, &unused, rev); err != nil {
		t.Fatal(err)
	}
	ep := &model.WorkloadEndpoint{Metadata: model.Metadata{Name: "vm-1"}, Spec: model.WorkloadEndpointSpec{
		Node: "b", Interface: "tap1", IPNetworks: []netip.Prefix{netip.MustParsePrefix("10.65.0.0/32")}}}
	if err := ds.Apply(ctx, []model.Resource{ep}); err != nil {
		t.Fatal(err)
	}
	held := func() map[string]string {
		t.Helper()
		snap, err := ds.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, b := range snap.Blocks {
			var as []string
			for a, h := range b.Spec.Allocations {
				as = append(as, a.String()+"="+h)
			}
			slices.Sort(as)
			out[b.Spec.CIDR.String()] = fmt.Sprintf("%s %v", b.Spec.Node, as)
		}
		return out
	}
	before := held()
	wantBefore := map[string]string{
		"10.65.0.0/28":  "b [10.65.0.0=vm-1 10.65.0.1=vm-2]",
		"10.65.0.16/28": "b [10.65.0.17=vm-3]",
		"10.65.0.32/28": "a [10.65.0.32=vm-a]",
	}
	if !reflect.DeepEqual(before, wantBefore) {
		t.Fatalf("blocks before = %v\nwant %v", before, wantBefore)
	}

	// Every node keeps alive; b's can be stopped and started again.
	var kaWG sync.WaitGroup
	t.Cleanup(kaWG.Wait)
	keepAlive := func(node string) context.CancelFunc {
		kctx, stop := context.WithCancel(ctx)
		kaWG.Add(1)
		go func() {
			defer kaWG.Done()
			_ = stores[node].KeepAlive(kctx, node, time.Second)
		}()
		return stop
	}
	t.Cleanup(keepAlive("a"))
	t.Cleanup(keepAlive("c"))
	stopB := keepAlive("b")
	waitLive := func(node string, want bool) {
		t.Helper()
		deadline := time.Now().Add(8 * time.Second)
		for {
			live, err := ds.Live(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if live[node] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s live: %v; want %v", node, live[node], want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, n := range []string{"a", "b", "c"} {
		waitLive(n, true)
	}

	const grace = 2 * time.Second
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	survivors := map[string]*deadNodeReleaser{}
	metrics := map[string]*metrics{}
	for _, n := range []string{"a", "c"} {
		metrics[n] = newMetrics()
		survivors[n] = newDeadNodeReleaser(n, grace, stores[n], discard, metrics[n])
	}
	// pass runs both survivors' step at once.
	pass := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := map[string]error{}
		var mu sync.Mutex
		for n, r := range survivors {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := r.step(ctx, time.Now())
				mu.Lock()
				errs[n] = err
				mu.Unlock()
			}()
		}
		wg.Wait()
		for n, err := range errs {
			if err != nil {
				t.Errorf("agent %s: %v", n, err)
			}
		}
	}
	released := func(n, kind string) float64 {
		var m dto.Metric
		if err := metrics[n].deadNodeReleases.WithLabelValues(kind).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	passFor := func(d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			pass()
		}
	}

	// b's lease lapses, and b is back before the grace: nothing goes.
	pass()
	stopB()
	waitLive("b", false)
	passFor(grace / 2)
	stopB = keepAlive("b")
	waitLive("b", true)
	passFor(grace)
	if got := held(); !reflect.DeepEqual(got, before) {
		t.Fatalf("b came back before the grace, yet blocks changed: %v\nwant %v", got, before)
	}

	// b goes for good. Its absence runs from now, not from the first
	// one: nothing goes before the grace.
	stopB()
	waitLive("b", false)
	gone := time.Now()
	for {
		pass()
		if got := held(); !reflect.DeepEqual(got, before) {
			if time.Since(gone) < grace {
				t.Fatalf("released %v after b was gone %v, before the grace (%v)", got, time.Since(gone), grace)
			}
			break
		}
		if time.Since(gone) > 4*grace {
			t.Fatalf("nothing released %v after b went", time.Since(gone))
		}
		time.Sleep(100 * time.Millisecond)
	}
	passFor(grace / 2) // more passes of both: nothing is released twice
	want := map[string]string{
		"10.65.0.0/28":  "b [10.65.0.0=vm-1]",
		"10.65.0.32/28": "a [10.65.0.32=vm-a]",
	}
	if got := held(); !reflect.DeepEqual(got, want) {
		t.Fatalf("blocks after b died = %v\nwant %v", got, want)
	}
	got := fmt.Sprintf("a: %v block, %v allocations; c: %v block, %v allocations",
		released("a", "block"), released("a", "allocations"), released("c", "block"), released("c", "allocations"))
	if got != "a: 1 block, 1 allocations; c: 0 block, 0 allocations" && got != "a: 0 block, 0 allocations; c: 1 block, 1 allocations" {
		t.Errorf("releases counted: %s; want one agent to have released the block and the allocations, once", got)
	}

	// The orchestrator deletes b's endpoint: the next pass frees the rest.
	if err := ds.Delete(ctx, []model.Ref{model.RefOf(ep)}); err != nil {
		t.Fatal(err)
	}
	pass()
	want = map[string]string{"10.65.0.32/28": "a [10.65.0.32=vm-a]"}
	if got := held(); !reflect.DeepEqual(got, want) {
		t.Errorf("blocks after b's endpoint went = %v\nwant %v", got, want)
	}
	if n := released("a", "block") + released("c", "block"); n != 2 {
		t.Errorf("%v blocks released in all; want 2", n)
	}
}
