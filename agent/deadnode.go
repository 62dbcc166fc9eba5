package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
)

// deadNodeLock is the lock (model.Elector) the agents take to give back
// dead nodes' blocks, so that one agent at a time does it.
const deadNodeLock = "ipam-dead-nodes"

// deadNodes follows, from successive looks at which nodes are live, since
// when each node holding IPAM blocks has been absent without a break. It
// knows only what it saw: the first look is made after the agent started,
// so an agent that just started waits a full grace before it calls anyone
// dead, and a restart of every agent releases nothing.
type deadNodes struct {
	grace time.Duration
	// absent is when each block holder was first seen absent, in the
	// current run of looks that all found it absent.
	absent map[string]time.Time
}

// observe records a look made at now: live are the nodes live then,
// holders the nodes holding blocks. It returns the holders other than self
// seen absent in every look for longer than grace, sorted; none while self
// is not live itself (its own view of liveness is then in doubt).
func (d *deadNodes) observe(now time.Time, self string, live map[string]bool, holders []string) []string {
	seen := make(map[string]time.Time, len(holders))
	var dead []string
	for _, n := range holders {
		if _, dup := seen[n]; dup || n == self || live[n] {
			continue
		}
		since, ok := d.absent[n]
		if !ok {
			since = now
		}
		seen[n] = since
		if now.Sub(since) > d.grace {
			dead = append(dead, n)
		}
	}
	d.absent = seen
	if !live[self] {
		return nil
	}
	slices.Sort(dead)
	return dead
}

// forget drops what was seen: after a look that failed, no node is known
// to have stayed absent.
func (d *deadNodes) forget() { d.absent = nil }

// absentFor is how long node has been seen absent at now.
func (d *deadNodes) absentFor(now time.Time, node string) time.Duration {
	return now.Sub(d.absent[node])
}

// deadNodeReleaser gives back the IPAM blocks of nodes whose agents are gone
// (Config.DeadNodeGrace): every agent follows liveness, and the one that
// gets the lock releases, with ipam.ReleaseDeadNode, what of a dead node's
// blocks no endpoint uses.
type deadNodeReleaser struct {
	self     string
	st       ipam.Store
	lv       model.Liveness
	el       model.Elector
	log      *slog.Logger
	releases *prometheus.CounterVec
	history  deadNodes
	// off says the datastore keeps no liveness or has no election (the
	// file store): there is nothing to do, and that was logged once.
	off bool
}

func newDeadNodeReleaser(self string, grace time.Duration, st ipam.Store, log *slog.Logger, m *metrics) *deadNodeReleaser {
	lv, _ := st.(model.Liveness)
	el, _ := st.(model.Elector)
	return &deadNodeReleaser{self: self, st: st, lv: lv, el: el, log: log, releases: m.deadNodeReleases, history: deadNodes{grace: grace}}
}

// step makes one look at liveness and the model and, when a node has been
// dead for longer than the grace and no other agent is releasing, gives
// back what of its blocks is unused. It returns what failed; a datastore
// without liveness or election turns the releaser off (logged once).
func (r *deadNodeReleaser) step(ctx context.Context, now time.Time) error {
	if r.off {
		return nil
	}
	if r.lv == nil || r.el == nil {
		r.disable(fmt.Errorf("%T: %w", r.st, model.ErrNotImplemented))
		return nil
	}
	snap, err := r.st.Snapshot(ctx)
	var live map[string]bool
	if err == nil {
		live, err = r.lv.Live(ctx)
	}
	if errors.Is(err, model.ErrNotImplemented) {
		r.disable(err)
		return nil
	}
	if err != nil {
		r.history.forget()
		return fmt.Errorf("look for dead nodes: %w", err)
	}
	var holders []string
	for _, b := range snap.Blocks {
		holders = append(holders, b.Spec.Node)
	}
	dead := r.history.observe(now, r.self, live, holders)
	if len(dead) == 0 {
		return nil
	}
	_, err = r.el.Lead(ctx, deadNodeLock, func(ctx context.Context) error { return r.release(ctx, now, dead) })
	if errors.Is(err, model.ErrNotImplemented) {
		r.disable(err)
		return nil
	}
	return err
}

// release gives back what of the dead nodes' blocks is unused; the lock is
// held. A node live again since the look is left alone.
func (r *deadNodeReleaser) release(ctx context.Context, now time.Time, dead []string) error {
	live, err := r.lv.Live(ctx)
	if err != nil {
		return fmt.Errorf("look for dead nodes: %w", err)
	}
	var errs []error
	for _, node := range dead {
		if live[node] {
			continue
		}
		rels, err := ipam.ReleaseDeadNode(ctx, r.st, node)
		for _, rel := range rels {
			kind := "allocations"
			if rel.Deleted {
				kind = "block"
			}
			r.releases.WithLabelValues(kind).Inc()
			r.log.Info("released a dead node's IPAM "+kind, "node", node, "block", rel.Block, "allocations", rel.Freed,
				"absentFor", r.history.absentFor(now, node).Round(time.Second))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("release the IPAM blocks of dead node %q: %w", node, err))
		}
	}
	return errors.Join(errs...)
}

func (r *deadNodeReleaser) disable(why error) {
	r.off = true
	r.log.Info("the datastore keeps no node liveness or election: the IPAM blocks of dead nodes are not released", "err", why)
}
