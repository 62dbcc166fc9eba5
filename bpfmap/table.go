package bpfmap

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpf"
)

// Table is one BPF map seen through domain keys K and values V: what the
// agent writes and calyxctl reads. The generated structs stay behind its
// codec. Every error names the map (and the key, for one entry).
type Table[K comparable, V any] struct {
	name  string
	m     *ebpf.Map
	codec codec[K, V]
	// mem holds the entries of a table of NewMemory's (m nil); hook is
	// asked before each of its writes.
	mem     map[K]V
	hook    func(op, table string, key any) error
	memSize int // in memory: the capacity (0: unbounded)
}

// backing is where a table's entries live: a kernel map, or (mp nil) a Go
// map whose writes hook may refuse.
type backing struct {
	name    string // the pinned name
	mp      *ebpf.Map
	hook    func(op, table string, key any) error
	memSize int
}

// codec converts a table's domain keys and values to and from the
// generated structs, and walks the map with the right types.
type codec[K comparable, V any] interface {
	key(K) any
	value(K, V) (any, error)
	lookup(m *ebpf.Map, k K) (V, error)
	each(m *ebpf.Map, fn func(K, V) bool) error
}

// structCodec is a codec between K, V and the generated BK, BV.
type structCodec[K comparable, V any, BK any, BV any] struct {
	keyTo   func(K) BK
	keyFrom func(BK) (K, error)
	valTo   func(V) BV
	valFrom func(BV) V
	// check, when set, refuses a value the programs could not use.
	check func(K, V) error
}

func (c structCodec[K, V, BK, BV]) key(k K) any { return c.keyTo(k) }

func (c structCodec[K, V, BK, BV]) value(k K, v V) (any, error) {
	if c.check != nil {
		if err := c.check(k, v); err != nil {
			return nil, err
		}
	}
	return c.valTo(v), nil
}

func (c structCodec[K, V, BK, BV]) lookup(m *ebpf.Map, k K) (V, error) {
	var bv BV
	if err := m.Lookup(c.keyTo(k), &bv); err != nil {
		var zero V
		return zero, err
	}
	return c.valFrom(bv), nil
}

func (c structCodec[K, V, BK, BV]) each(m *ebpf.Map, fn func(K, V) bool) error {
	var bk BK
	var bv BV
	it := m.Iterate()
	for it.Next(&bk, &bv) {
		k, err := c.keyFrom(bk)
		if err != nil {
			return err
		}
		if !fn(k, c.valFrom(bv)) {
			return nil
		}
	}
	return it.Err()
}

// newTable binds a map to its codec.
func newTable[K comparable, V any, BK any, BV any](b backing, c structCodec[K, V, BK, BV]) *Table[K, V] {
	t := &Table[K, V]{name: b.name, m: b.mp, codec: c}
	if b.mp == nil {
		t.mem, t.hook, t.memSize = map[K]V{}, b.hook, b.memSize
	}
	return t
}

// Name is the map's pinned name.
func (t *Table[K, V]) Name() string { return t.name }

// Capacity is the map's max_entries (0 in memory: unbounded).
func (t *Table[K, V]) Capacity() int {
	if t.m == nil {
		return t.memSize
	}
	return int(t.m.MaxEntries())
}

// memWrite asks an in-memory table's hook about a write.
func (t *Table[K, V]) memWrite(op string, k K) error {
	if t.hook == nil {
		return nil
	}
	return t.hook(op, t.name, k)
}

// All returns every entry.
func (t *Table[K, V]) All() (map[K]V, error) {
	out := make(map[K]V)
	err := t.Each(func(k K, v V) bool { out[k] = v; return true })
	return out, err
}

// Each calls fn for every entry until it returns false. Entries the
// programs change meanwhile may be seen in either state, or missed.
func (t *Table[K, V]) Each(fn func(K, V) bool) error {
	if t.m == nil {
		for k, v := range t.mem {
			if !fn(k, v) {
				break
			}
		}
		return nil
	}
	if err := t.codec.each(t.m, fn); err != nil {
		return fmt.Errorf("iterate %s: %w", t.name, err)
	}
	return nil
}

// Lookup returns the entry of k and whether there is one.
func (t *Table[K, V]) Lookup(k K) (V, bool, error) {
	if t.m == nil {
		v, ok := t.mem[k]
		return v, ok, nil
	}
	v, err := t.codec.lookup(t.m, k)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("lookup %s[%+v]: %w", t.name, k, err)
	}
	return v, true, nil
}

// Put creates or replaces the entry of k. A full map refuses a new key
// with an error wrapping ErrTableFull (the kernel says E2BIG for a hash,
// ENOSPC for an LPM trie).
func (t *Table[K, V]) Put(k K, v V) error {
	bv, err := t.codec.value(k, v)
	if err != nil {
		return fmt.Errorf("put %s[%+v]: %w", t.name, k, err)
	}
	if t.m == nil {
		if err := t.memWrite("put", k); err != nil {
			return fmt.Errorf("put %s[%+v]: %w", t.name, k, err)
		}
		if _, ok := t.mem[k]; !ok && t.memSize > 0 && len(t.mem) >= t.memSize {
			return fmt.Errorf("put %s[%+v]: %w (%d entries)", t.name, k, ErrTableFull, t.memSize)
		}
		t.mem[k] = v
		return nil
	}
	if err := t.m.Put(t.codec.key(k), bv); err != nil {
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
			err = fmt.Errorf("%w (%d entries): %w", ErrTableFull, t.Capacity(), err)
		}
		return fmt.Errorf("put %s[%+v]: %w", t.name, k, err)
	}
	return nil
}

// Delete removes the entry of k; a missing entry is not an error.
func (t *Table[K, V]) Delete(k K) error {
	if t.m == nil {
		if err := t.memWrite("delete", k); err != nil {
			return fmt.Errorf("delete %s[%+v]: %w", t.name, k, err)
		}
		delete(t.mem, k)
		return nil
	}
	if err := t.m.Delete(t.codec.key(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s[%+v]: %w", t.name, k, err)
	}
	return nil
}

// ErrTableFull is wrapped by Put when the map has no room for a new key.
var ErrTableFull = errors.New("map full")

// sameKey is the key conversion of maps keyed by a plain integer.
func sameKey(k uint32) (uint32, error) { return k, nil }

// The codecs of the tables in Maps (types.go and policy.go hold the
// conversions).
var (
	configCodec = structCodec[uint32, NodeConfig, uint32, bpf.CalyxCxNodeConfig]{
		keyTo: func(k uint32) uint32 { return k }, keyFrom: sameKey, valTo: NodeConfig.toBPF, valFrom: nodeConfigFromBPF}
	prefilterCodec = structCodec[netip.Prefix, struct{}, bpf.CalyxCxRouteKey, uint32]{
		keyTo: routeKeyToBPF, keyFrom: routeKeyFromBPF,
		valTo: func(struct{}) uint32 { return 0 }, valFrom: func(uint32) struct{} { return struct{}{} }}
	policyCodec = structCodec[PolicyKey, PolicyVerdict, bpf.CalyxCxPolicyKey, bpf.CalyxCxPolicyVerdict]{
		keyTo: PolicyKey.toBPF, keyFrom: func(k bpf.CalyxCxPolicyKey) (PolicyKey, error) { return policyKeyFromBPF(k), nil },
		valTo: PolicyVerdict.toBPF, valFrom: policyVerdictFromBPF,
		check: func(k PolicyKey, _ PolicyVerdict) error {
			if k.Bits < 0 || k.Bits > 24 {
				return fmt.Errorf("bits %d out of range 0-24", k.Bits)
			}
			return nil
		}}
	ipcacheCodec = structCodec[netip.Prefix, IPCacheEntry, bpf.CalyxCxRouteKey, bpf.CalyxCxIdentity]{
		keyTo: routeKeyToBPF, keyFrom: routeKeyFromBPF, valTo: IPCacheEntry.toBPF, valFrom: ipcacheEntryFromBPF}
	ifaceCodec = structCodec[uint32, Iface, uint32, bpf.CalyxCxIface]{
		keyTo: func(k uint32) uint32 { return k }, keyFrom: sameKey, valTo: Iface.toBPF, valFrom: ifaceFromBPF}
	fipCodec = structCodec[netip.Addr, FloatingIP, bpf.CalyxCxFipKey, bpf.CalyxCxFip]{
		keyTo:   func(a netip.Addr) bpf.CalyxCxFipKey { return bpf.CalyxCxFipKey{Addr: addrTo16(a)} },
		keyFrom: func(k bpf.CalyxCxFipKey) (netip.Addr, error) { return addrFrom16(k.Addr), nil },
		valTo:   FloatingIP.toBPF, valFrom: floatingIPFromBPF}
	routeCodec = structCodec[netip.Prefix, Route, bpf.CalyxCxRouteKey, bpf.CalyxCxRoute]{
		keyTo: routeKeyToBPF, keyFrom: routeKeyFromBPF, valTo: Route.toBPF, valFrom: routeFromBPF}
	endpointCodec = structCodec[uint32, EndpointStatus, uint32, bpf.CalyxCxEpStatus]{
		keyTo: func(k uint32) uint32 { return k }, keyFrom: sameKey, valTo: EndpointStatus.toBPF, valFrom: endpointStatusFromBPF}
	linkCodec = structCodec[uint32, Link, uint32, bpf.CalyxCxLink]{
		keyTo: func(k uint32) uint32 { return k }, keyFrom: sameKey, valTo: Link.toBPF, valFrom: linkFromBPF}
)
