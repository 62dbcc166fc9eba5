package calc

import "github.com/calyxnet/calyx/bpfmap"

// counterSlots hands out the workload interfaces' counter slots
// (bpfmap.CounterSlots): one per interface for as long as it is
// programmed, so that its forwarding verdicts are counted in a per-CPU
// array. A slot an interface gave up is handed out again only from the next
// Compute on, after the agent's prune of the Desired that dropped it took it
// out of cx_ifaces: two interfaces never count into one slot. Beyond the
// last slot, interfaces get none and are counted in the hash (cx_counters).
type counterSlots struct {
	of    map[uint32]uint16 // by ifindex
	used  [bpfmap.CounterSlots]bool
	fresh []uint16 // handed out in this Compute: to be zeroed first
	// held are the slots the maps held when this Calculator started
	// (AdoptCounterSlots), by ifindex and as a set of the ones not taken
	// back yet: an interface keeps its slot, and its counts, across agent
	// restarts, and nobody else gets it meanwhile.
	held     map[uint32]uint16
	reserved map[uint16]bool
}

func newCounterSlots() *counterSlots {
	return &counterSlots{of: map[uint32]uint16{}, held: map[uint32]uint16{}, reserved: map[uint16]bool{}}
}

// AdoptCounterSlots tells a new Calculator which slot each interface has
// in the maps (cx_ifaces), so that it keeps it. Call it before the first
// Compute; slots out of range are ignored.
func (c *Calculator) AdoptCounterSlots(held map[uint32]uint16) {
	for idx, s := range held {
		if s >= bpfmap.FirstWorkloadCounterSlot && s < bpfmap.CounterSlots {
			c.slots.held[idx] = s
			c.slots.reserved[s] = true
		}
	}
}

// slot is ifindex's slot, handed out on its first call: the one the maps
// held for it when that one is free, else the lowest free one; 0 when none
// is left.
func (cs *counterSlots) slot(idx uint32) uint16 {
	if s, ok := cs.of[idx]; ok {
		return s
	}
	s, ok := cs.held[idx]
	if ok {
		delete(cs.held, idx)
		delete(cs.reserved, s)
	}
	if !ok || cs.used[s] {
		s = 0
		for i := bpfmap.FirstWorkloadCounterSlot; i < bpfmap.CounterSlots; i++ {
			if !cs.used[i] && !cs.reserved[i] {
				s = i
				break
			}
		}
		if s == 0 {
			return 0
		}
		cs.fresh = append(cs.fresh, s)
	}
	cs.used[s] = true
	cs.of[idx] = s
	return s
}

// finish releases the slots of interfaces that are not programmed any more
// and returns the slots handed out since the last call.
func (cs *counterSlots) finish(ifaces map[uint32]bpfmap.Iface) []uint16 {
	for idx, s := range cs.of {
		if _, ok := ifaces[idx]; !ok {
			delete(cs.of, idx)
			cs.used[s] = false
		}
	}
	// What the maps held for interfaces that are gone is free from now.
	clear(cs.held)
	clear(cs.reserved)
	fresh := cs.fresh
	cs.fresh = nil
	return fresh
}
