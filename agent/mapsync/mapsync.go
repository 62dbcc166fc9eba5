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
	// changed, when not nil, gives the keys a Desired's Delta names for
	// this table.
	changed func(*calc.Delta) map[K]struct{}
	have    map[K]V // what the table holds, as written or last read
	// early counts the deletes an upsert made to make room, for the
	// next prune to report.
	early int
	// upserted is the generation of the Desired the last upsert wrote
	// whole, synced the one the table holds exactly (upserted and
	// pruned without a refusal); 0 when none.
	upserted, synced uint64
}

// keys returns the keys to look at for d: those its Delta names when the
// table holds exactly the Desired that Delta starts from, else nil (every
// key).
func (s *tableStep[K, V]) keys(d *calc.Desired) map[K]struct{} {
	if s.changed == nil || d.Delta == nil || d.Delta.Prev == 0 || d.Delta.Prev != s.synced {
		return nil
	}
	return s.changed(d.Delta)
}

// overflows says whether adding want's new keys (of keys, when not nil)
// to what the table holds would pass its capacity.
func (s *tableStep[K, V]) overflows(want map[K]V, keys map[K]struct{}) bool {
	capacity := s.t.Capacity()
	if capacity == 0 {
		return false
	}
	adds := 0
	isNew := func(k K) {
		if _, ok := s.have[k]; !ok {
			adds++
		}
	}
	if keys != nil {
		for k := range keys {
			if _, ok := want[k]; ok {
				isNew(k)
			}
		}
	} else {
		for k := range want {
			isNew(k)
		}
	}
	return len(s.have)+adds > capacity
}

func newStep[K, V comparable](t *bpfmap.Table[K, V], want func(*calc.Desired) map[K]V) *tableStep[K, V] {
	return &tableStep[K, V]{t: t, want: want}
}

// withDelta makes the step look only at the keys changed tells, when it
// can (see keys).
func (s *tableStep[K, V]) withDelta(changed func(*calc.Delta) map[K]struct{}) *tableStep[K, V] {
	s.changed = changed
	return s
}

func (s *tableStep[K, V]) table() string { return s.t.Name() }

func (s *tableStep[K, V]) fill() Fill {
	return Fill{Table: s.t.Name(), Entries: len(s.have), Capacity: s.t.Capacity()}
}

func (s *tableStep[K, V]) reload() error {
	s.upserted, s.synced = 0, 0
	have, err := s.t.All()
	if err != nil {
		return fmt.Errorf("read current %s: %w", s.t.Name(), err)
	}
	s.have = have
	return nil
}

// generation is d's number, 0 when it has none.
func generation(d *calc.Desired) uint64 {
	if d.Delta == nil {
		return 0
	}
	return d.Delta.Gen
}

// upsert writes every desired entry the table lacks or holds otherwise,
// recording each write in have. A refused write (a full table, say) does
// not stop the others: the refusals are returned together (the first few
// named), and have keeps the refused entries as they were, so the next
// sync tries them again.
func (s *tableStep[K, V]) upsert(d *calc.Desired) (n int, err error) {
	var fails refusals
	want, keys := s.want(d), s.keys(d)
	if s.overflows(want, keys) {
		// The new entries fit only once the stale ones are gone: prune
		// first (they are not wanted anyway), then add.
		pruned, err := s.deleteUnwanted(want, keys)
		s.early += pruned // reported by the prune walk
		if err != nil {
			fails.add(err)
		}
	}
	put := func(k K, w V) {
		if h, ok := s.have[k]; ok && h == w {
			return
		}
		if err := s.t.Put(k, w); err != nil {
			fails.add(err)
			return
		}
		s.have[k] = w
		n++
	}
	if keys != nil {
		for k := range keys {
			if w, ok := want[k]; ok {
				put(k, w)
			}
		}
	} else {
		for k, w := range want {
			put(k, w)
		}
	}
	s.upserted = 0
	if fails.n == 0 {
		s.upserted = generation(d)
	}
	return n, fails.err(s.t.Name(), "writes")
}

// prune deletes every entry that is not desired, as upsert writes (and
// reports the deletes an upsert made early to make room).
func (s *tableStep[K, V]) prune(d *calc.Desired) (n int, err error) {
	gen := generation(d)
	deleted, err := s.deleteUnwanted(s.want(d), s.keys(d))
	n, s.early = s.early+deleted, 0
	s.synced = 0
	if err == nil && gen != 0 && s.upserted == gen {
		s.synced = gen
	}
	return n, err
}

// deleteUnwanted deletes the entries the table holds that want lacks,
// among keys when not nil.
func (s *tableStep[K, V]) deleteUnwanted(want map[K]V, keys map[K]struct{}) (n int, err error) {
	var fails refusals
	del := func(k K) {
		if _, ok := want[k]; ok {
			return
		}
		if _, ok := s.have[k]; !ok {
			return
		}
		if err := s.t.Delete(k); err != nil {
			fails.add(err)
			return
		}
		delete(s.have, k)
		n++
	}
	if keys != nil {
		for k := range keys {
			del(k)
		}
	} else {
		for k := range s.have {
			del(k)
		}
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
		newStep(m.Policy, func(d *calc.Desired) map[bpfmap.PolicyKey]bpfmap.PolicyVerdict { return d.Policy }).
			withDelta(func(d *calc.Delta) map[bpfmap.PolicyKey]struct{} { return d.Policy }),
		newStep(m.IPCache, func(d *calc.Desired) map[netip.Prefix]bpfmap.IPCacheEntry { return d.IPCache }).
			withDelta(func(d *calc.Delta) map[netip.Prefix]struct{} { return d.IPCache }),
		newStep(m.Ifaces, func(d *calc.Desired) map[uint32]bpfmap.Iface { return d.Ifaces }),
		newStep(m.FIPs, func(d *calc.Desired) map[netip.Addr]bpfmap.FloatingIP { return d.FloatingIPs }).
			withDelta(func(d *calc.Delta) map[netip.Addr]struct{} { return d.FloatingIPs }),
		newStep(m.Routes, func(d *calc.Desired) map[netip.Prefix]bpfmap.Route { return d.Routes }).
			withDelta(func(d *calc.Delta) map[netip.Prefix]struct{} { return d.Routes }),
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
