// Package mapsync makes the BPF maps equal to a calc.Desired with the fewest
// writes, in an order that never breaks traffic: new and changed entries go
// in before stale ones are removed.
package mapsync

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/calyxnet/calyx/agent/calc"
	"github.com/calyxnet/calyx/bpfmap"
)

// Writes are the entries one table had written and deleted.
type Writes struct{ Puts, Deletes int }

// Counts are the writes of a sync, by table name.
type Counts map[string]Writes

// Total is every write and delete.
func (c Counts) Total() int {
	n := 0
	for _, w := range c {
		n += w.Puts + w.Deletes
	}
	return n
}

func (c Counts) add(o Counts) {
	for name, w := range o {
		have := c[name]
		c[name] = Writes{Puts: have.Puts + w.Puts, Deletes: have.Deletes + w.Deletes}
	}
}

// step keeps one table equal to its part of a Desired.
type step interface {
	table() string
	fill() Fill
	reload() error
	upsert(d *calc.Desired) (int, error)
	prune(d *calc.Desired) (int, error)
}

// tableStep is a step for a table whose desired entries are a map.
type tableStep[K, V comparable] struct {
	t    *bpfmap.Table[K, V]
	want func(*calc.Desired) map[K]V
	have map[K]V // what the table holds, as written or last read
	// early counts the deletes an upsert made to make room, for the
	// next prune to report.
	early int
}

// overflows says whether adding want's new keys to what the table holds
// would pass its capacity.
func (s *tableStep[K, V]) overflows(want map[K]V) bool {
	capacity := s.t.Capacity()
	if capacity == 0 {
		return false
	}
	adds := 0
	for k := range want {
		if _, ok := s.have[k]; !ok {
			adds++
		}
	}
	return len(s.have)+adds > capacity
}

func newStep[K, V comparable](t *bpfmap.Table[K, V], want func(*calc.Desired) map[K]V) step {
	return &tableStep[K, V]{t: t, want: want}
}

func (s *tableStep[K, V]) table() string { return s.t.Name() }

func (s *tableStep[K, V]) fill() Fill {
	return Fill{Table: s.t.Name(), Entries: len(s.have), Capacity: s.t.Capacity()}
}

func (s *tableStep[K, V]) reload() error {
	have, err := s.t.All()
	if err != nil {
		return fmt.Errorf("read current %s: %w", s.t.Name(), err)
	}
	s.have = have
	return nil
}

// upsert writes every desired entry the table lacks or holds otherwise,
// recording each write in have. A refused write (a full table, say) does
// not stop the others: the refusals are returned together (the first few
// named), and have keeps the refused entries as they were, so the next
// sync tries them again.
func (s *tableStep[K, V]) upsert(d *calc.Desired) (n int, err error) {
	var fails refusals
	want := s.want(d)
	if s.overflows(want) {
		// The new entries fit only once the stale ones are gone: prune
		// first (they are not wanted anyway), then add.
		pruned, err := s.prune(d)
		s.early += pruned // reported by the prune walk
		if err != nil {
			fails.add(err)
		}
	}
	for k, w := range want {
		if h, ok := s.have[k]; ok && h == w {
			continue
		}
		if err := s.t.Put(k, w); err != nil {
			fails.add(err)
			continue
		}
		s.have[k] = w
		n++
	}
	return n, fails.err(s.t.Name(), "writes")
}

// prune deletes every entry that is not desired, as upsert writes (and
// reports the deletes an upsert made early to make room).
func (s *tableStep[K, V]) prune(d *calc.Desired) (n int, err error) {
	want := s.want(d)
	n, s.early = s.early, 0
	var fails refusals
	for k := range s.have {
		if _, ok := want[k]; ok {
			continue
		}
		if err := s.t.Delete(k); err != nil {
			fails.add(err)
			continue
		}
		delete(s.have, k)
		n++
	}
	return n, fails.err(s.t.Name(), "deletes")
}

// refusals gathers the errors of one table's writes: a full table refuses
// thousands at once, and one line names the count and the first few.
type refusals struct {
	n     int
	first []error
}

const refusalsNamed = 3

func (r *refusals) add(err error) {
	r.n++
	if len(r.first) < refusalsNamed {
		r.first = append(r.first, err)
	}
}

func (r *refusals) err(table, what string) error {
	if r.n == 0 {
		return nil
	}
	err := errors.Join(r.first...)
	if r.n > len(r.first) {
		return fmt.Errorf("%s: %d %s refused, the first %d: %w", table, r.n, what, len(r.first), err)
	}
	return err
}

// configStep keeps cx_config's one entry: the model's node config with the
// syncer's route generation.
type configStep struct {
	t    *bpfmap.Table[uint32, bpfmap.NodeConfig]
	have bpfmap.NodeConfig
}

func (s *configStep) table() string { return s.t.Name() }

func (s *configStep) fill() Fill {
	return Fill{Table: s.t.Name(), Entries: 1, Capacity: s.t.Capacity()}
}

func (s *configStep) reload() error {
	c, _, err := s.t.Lookup(0)
	if err != nil {
		return fmt.Errorf("read current %s: %w", s.t.Name(), err)
	}
	s.have = c
	return nil
}

func (s *configStep) upsert(d *calc.Desired) (int, error) {
	want := d.Config
	// The route generation is the syncer's, not the model's.
	want.RouteGen = s.have.RouteGen
	if want == s.have {
		return 0, nil
	}
	return 1, s.put(want)
}

func (s *configStep) put(c bpfmap.NodeConfig) error {
	if err := s.t.Put(0, c); err != nil {
		return err
	}
	s.have = c
	return nil
}

// The node config has one entry, always there.
func (s *configStep) prune(*calc.Desired) (int, error) { return 0, nil }

// bumpRouteGen moves cx_config to a new route generation once the routes
// changed, so that the programs stop using routes cached in conntrack
// entries (the established-flow fast path) and look them up again. Never
// 0, which turns the cache off.
func (s *configStep) bumpRouteGen() (int, error) {
	c := s.have
	c.RouteGen++
	if c.RouteGen == 0 {
		c.RouteGen = 1
	}
	if !c.Address.IsValid() {
		// Unconfigured: the programs ignore cx_config altogether.
		return 0, nil
	}
	return 1, s.put(c)
}

// Syncer keeps a copy of what the maps hold, read once from the pins at
// start (adopting a previous agent's state), so each diff is in memory.
type Syncer struct {
	// steps in the order Upsert writes them; Prune goes backwards:
	//   - the prefilter and the node config first (routes that
	//     encapsulate need the config);
	//   - the policy tables and identities before the interfaces that
	//     point at them (a table is never changed in place: a changed one
	//     has a new number);
	//   - interfaces and floating IPs before routes, so that no route
	//     points at an unknown interface or an untranslatable floating IP;
	//   - the endpoints' states last.
	steps  []step
	config *configStep
	routes string
}

// New reads the current contents of the tables it keeps.
func New(m *bpfmap.Maps) (*Syncer, error) {
	cfg := &configStep{t: m.Config}
	s := &Syncer{config: cfg, routes: m.Routes.Name(), steps: []step{
		newStep(m.Prefilter, func(d *calc.Desired) map[netip.Prefix]struct{} { return d.Prefilter }),
		cfg,
		newStep(m.Policy, func(d *calc.Desired) map[bpfmap.PolicyKey]bpfmap.PolicyVerdict { return d.Policy }),
		newStep(m.IPCache, func(d *calc.Desired) map[netip.Prefix]bpfmap.IPCacheEntry { return d.IPCache }),
		newStep(m.Ifaces, func(d *calc.Desired) map[uint32]bpfmap.Iface { return d.Ifaces }),
		newStep(m.FIPs, func(d *calc.Desired) map[netip.Addr]bpfmap.FloatingIP { return d.FloatingIPs }),
		newStep(m.Routes, func(d *calc.Desired) map[netip.Prefix]bpfmap.Route { return d.Routes }),
		newStep(m.Endpoints, func(d *calc.Desired) map[uint32]bpfmap.EndpointStatus { return d.Endpoints }),
	}}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Tables names the tables the syncer keeps, in the order it writes them.
func (s *Syncer) Tables() []string {
	out := make([]string, len(s.steps))
	for i, st := range s.steps {
		out[i] = st.table()
	}
	return out
}

// Fill is how full one table is.
type Fill struct {
	Table             string
	Entries, Capacity int
}

// Fill says how full each table the syncer keeps is, as it last wrote or
// read them. Not safe to call during a sync.
func (s *Syncer) Fill() []Fill {
	out := make([]Fill, len(s.steps))
	for i, st := range s.steps {
		out[i] = st.fill()
	}
	return out
}

// Reload replaces the cache with what the maps hold now, so that the next
// Upsert and Prune also repair entries changed behind the agent's back
// (by hand with bpftool, or by anything else that writes the pins).
func (s *Syncer) Reload() error {
	for _, st := range s.steps {
		if err := st.reload(); err != nil {
			return err
		}
	}
	return nil
}

// Upsert writes every desired entry that is missing or different, table by
// table in the syncer's order. Refused writes are returned together, after
// every other write was made; the cache keeps matching the maps, so the
// next Upsert tries the refused ones again. A Desired whose policy did not
// compile is refused whole.
func (s *Syncer) Upsert(d *calc.Desired) (Counts, error) {
	return s.walk(d, false)
}

// Prune deletes every entry that is not desired, table by table in the
// reverse order.
func (s *Syncer) Prune(d *calc.Desired) (Counts, error) {
	return s.walk(d, true)
}

// walk upserts (or prunes, backwards) every table, then moves the route
// generation on when the routes changed.
func (s *Syncer) walk(d *calc.Desired, pruning bool) (Counts, error) {
	c := Counts{}
	if d.PolicyErr != nil {
		return c, fmt.Errorf("compile network policy: %w", d.PolicyErr)
	}
	var errs []error
	for i := range s.steps {
		st := s.steps[i]
		if pruning {
			st = s.steps[len(s.steps)-1-i]
		}
		var n int
		var err error
		w := c[st.table()]
		if pruning {
			n, err = st.prune(d)
			w.Deletes += n
		} else {
			n, err = st.upsert(d)
			w.Puts += n
		}
		if n > 0 {
			c[st.table()] = w
		}
		// A table that refused writes does not stop the others: what
		// was written is as good as it was, and what was refused fails
		// closed (a missing route, interface or policy entry drops).
		errs = append(errs, err)
		if st.table() == s.routes && n > 0 {
			n, err := s.config.bumpRouteGen()
			if n > 0 {
				cw := c[s.config.table()]
				cw.Puts += n
				c[s.config.table()] = cw
			}
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}

// Sync is Upsert followed by Prune (also when some writes were refused).
func (s *Syncer) Sync(d *calc.Desired) (Counts, error) {
	if d.PolicyErr != nil {
		return Counts{}, fmt.Errorf("compile network policy: %w", d.PolicyErr)
	}
	c, uerr := s.Upsert(d)
	p, perr := s.Prune(d)
	c.add(p)
	return c, errors.Join(uerr, perr)
}
