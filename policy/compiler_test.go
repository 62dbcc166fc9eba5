package policy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/calyxnet/calyx/model"
)

// TestCompilerIncrementalEqualsFull applies random sequences of changes to
// a model (endpoints added, removed, relabelled, readdressed; policies
// added, removed, their rules or selector changed; floating IPs moved) and
// checks after every change that one Compiler, reused throughout, gives
// exactly what a fresh Compile of the same snapshot gives.
func TestCompilerIncrementalEqualsFull(t *testing.T) {
	steps, named := 0, 0
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 7))
		s := randSnapshot(r)
		if r.IntN(2) == 0 {
			addClusterPolicy(r, s)
		}
		c := NewCompiler()
		var prev *Output // a copy of the last Output, to check the changes named
		hosts := []netip.Addr{netip.MustParseAddr("192.168.0.1")}
		for i := range 25 {
			what := mutate(r, s)
			if r.IntN(15) == 0 { // the host gains or loses an address
				hosts = append(hosts[:1:1], netip.MustParseAddr(pick(r, []string{"10.0.0.7", "192.168.0.2", "fd00::1"})))[:1+r.IntN(2)]
				what += ", host addresses " + fmt.Sprint(hosts)
			}
			in := Input{Snapshot: s, Node: local, HostAddrs: hosts}
			got, gerr := c.Compile(in)
			want, werr := Compile(in)
			if fmt.Sprint(gerr) != fmt.Sprint(werr) {
				t.Fatalf("seed %d step %d (%s): incremental error %v, full %v", seed, i, what, gerr, werr)
			}
			if got == nil {
				prev = nil
				steps++
				s = s.Clone()
				continue
			}
			polChanged, ipcChanged := got.PolicyChanged, got.IPCacheChanged
			got.PolicyChanged, got.IPCacheChanged = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d (%s): incremental result differs from the full one:\n%s\nfull:\n%s",
					seed, i, what, describe(got), describe(want))
			}
			// The keys named changed cover every entry that differs
			// from the last Output.
			if prev != nil && polChanged != nil {
				if k, ok := undeclared(prev.Policy, got.Policy, polChanged); ok {
					t.Fatalf("seed %d step %d (%s): cx_policy %+v changed but is not named", seed, i, what, k)
				}
			}
			if prev != nil && ipcChanged != nil {
				if k, ok := undeclared(prev.IPCache, got.IPCache, ipcChanged); ok {
					t.Fatalf("seed %d step %d (%s): cx_ipcache %s changed but is not named", seed, i, what, k)
				}
			}
			if (polChanged == nil) != (ipcChanged == nil) {
				t.Fatalf("seed %d step %d: one table's changes named, not the other's", seed, i)
			}
			if polChanged != nil {
				named++
			}
			prev = &Output{Policy: maps.Clone(got.Policy), IPCache: maps.Clone(got.IPCache)}
			steps++
			s = s.Clone()
		}
	}
	if named < steps/2 {
		t.Fatalf("only %d of %d changes named what changed", named, steps)
	}
	t.Logf("%d changes compared, %d with the changed keys named", steps, named)
}

// undeclared returns a key whose entry differs between before and after
// but that changed does not name.
func undeclared[K, V comparable](before, after map[K]V, changed map[K]struct{}) (K, bool) {
	for k, v := range after {
		if b, ok := before[k]; !ok || b != v {
			if _, named := changed[k]; !named {
				return k, true
			}
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			if _, named := changed[k]; !named {
				return k, true
			}
		}
	}
	var zero K
	return zero, false
}

// mutate changes s in place as one datastore change would (replacing
// resources, never editing one in place) and says what it did.
func mutate(r *rand.Rand, s *model.Snapshot) string {
	epNames := func() []string {
		var out []string
		for n := range s.Endpoints {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	polNames := func() []string {
		var out []string
		for n := range s.Policies {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	switch r.IntN(9) {
	case 0: // a new endpoint, maybe with new labels
		name := fmt.Sprintf("new%03d", r.IntN(1000))
		node := pick(r, []string{local, "node-b"})
		labels := []string{"role", pick(r, []string{"web", "db", "api", "cache", "batch"})}
		if r.IntN(2) == 0 {
			labels = append(labels, "env", pick(r, []string{"prod", "dev", "qa"}))
		}
		s.Put(ep(name, node, []string{fmt.Sprintf("10.0.0.%d", 100+r.IntN(100))}, labels...))
		return "add endpoint " + name
	case 1:
		names := epNames()
		if len(names) == 0 {
			return "nothing"
		}
		n := pick(r, names)
		s.Remove(model.Ref{Kind: model.KindWorkloadEndpoint, Name: n})
		return "remove endpoint " + n
	case 2: // relabel
		names := epNames()
		if len(names) == 0 {
			return "nothing"
		}
		old := s.Endpoints[pick(r, names)]
		e := *old
		e.Metadata.Labels = map[string]string{"role": pick(r, []string{"web", "db", "api", "cache"})}
		if r.IntN(2) == 0 {
			e.Metadata.Labels["tier"] = pick(r, []string{"1", "2"})
		}
		s.Put(&e)
		return "relabel endpoint " + e.Metadata.Name
	case 3: // readdress, maybe into a rule net
		names := epNames()
		if len(names) == 0 {
			return "nothing"
		}
		old := s.Endpoints[pick(r, names)]
		e := *old
		e.Spec.IPNetworks = []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.0.0.%d/32", r.IntN(40)))}
		s.Put(&e)
		return "readdress endpoint " + e.Metadata.Name
	case 4: // a rule's ports or a rule added or dropped
		names := polNames()
		if len(names) == 0 {
			return "nothing"
		}
		old := s.Policies[pick(r, names)]
		p := *old
		p.Spec.Ingress = append([]model.Rule(nil), old.Spec.Ingress...)
		switch {
		case len(p.Spec.Ingress) > 0 && r.IntN(2) == 0:
			i := r.IntN(len(p.Spec.Ingress))
			p.Spec.Ingress[i] = randRule(r, in)
		case len(p.Spec.Ingress) > 0 && r.IntN(2) == 0:
			p.Spec.Ingress = p.Spec.Ingress[1:]
		default:
			p.Spec.Ingress = append(p.Spec.Ingress, randRule(r, in))
		}
		s.Put(&p)
		return "change rules of " + p.Metadata.Name
	case 5: // a policy's selector or order
		names := polNames()
		if len(names) == 0 {
			return "nothing"
		}
		old := s.Policies[pick(r, names)]
		p := *old
		if r.IntN(2) == 0 {
			p.Spec.Selector = pick(r, propSelectors)
		} else {
			o := float64(r.IntN(6))
			p.Spec.Order = &o
		}
		s.Put(&p)
		return "change selector or order of " + p.Metadata.Name
	case 6: // a new policy
		name := fmt.Sprintf("newpol%d", r.IntN(20))
		p := pol(name, float64(r.IntN(6)), pick(r, propSelectors), []model.Rule{randRule(r, in)}, []model.Rule{randRule(r, eg)})
		p.Spec.Types = []model.PolicyType{in, eg}
		s.Put(p)
		return "add policy " + name
	case 7:
		names := polNames()
		if len(names) == 0 {
			return "nothing"
		}
		n := pick(r, names)
		s.Remove(model.Ref{Kind: model.KindNetworkPolicy, Name: n})
		return "remove policy " + n
	default: // a floating IP moved to another endpoint
		names := epNames()
		if len(names) == 0 {
			return "nothing"
		}
		f := &model.FloatingIP{Metadata: model.Metadata{Name: "fip0"}, Spec: model.FloatingIPSpec{
			IP: netip.MustParseAddr("203.0.113.1"), Endpoint: pick(r, names)}}
		s.Put(f)
		return "move floating IP to " + f.Spec.Endpoint
	}
}
