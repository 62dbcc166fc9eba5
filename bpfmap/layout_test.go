package bpfmap_test

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/calyxnet/calyx/bpf"
	"github.com/calyxnet/calyx/bpfmap"
)

var updateLayouts = flag.Bool("update-layouts", false, "record the maps' layouts in testdata/layouts.txt")

const layoutsFile = "testdata/layouts.txt"

// TestLayoutVersions holds every map's layout version to its layout: the
// type, sizes and flags, and the BTF of key and value (member names,
// offsets and types). A layout recorded under one version that changes
// without a new version fails: an agent would adopt a pinned map whose
// bytes mean something else. A new version is recorded with
// -update-layouts (and, for a map with state, needs a conversion in
// loader/migrate.go); the old versions' lines stay, as history.
func TestLayoutVersions(t *testing.T) {
	spec, err := bpf.LoadCalyx()
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]string{}
	var lines []string
	if b, err := os.ReadFile(layoutsFile); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if f := strings.Fields(l); len(f) == 2 {
				recorded[f[0]] = f[1]
				lines = append(lines, l)
			}
		}
	}
	for _, name := range bpfmap.Names() {
		ms, ok := spec.Maps[name]
		if !ok {
			t.Errorf("map %s is in bpfmap's list but not in the programs", name)
			continue
		}
		if ms.Pinning != ebpf.PinByName {
			t.Errorf("map %s is in bpfmap's list but the programs do not pin it", name)
		}
		pin := bpfmap.PinName(name)
		got := layoutHash(ms)
		switch want, ok := recorded[pin]; {
		case ok && want == got:
		case ok && !*updateLayouts:
			t.Errorf("the layout of %s changed, but its version did not: give it the next version in bpfmap's list (and a conversion in loader/migrate.go if it holds state), then run go test ./bpfmap -update-layouts", pin)
		case ok:
			t.Errorf("-update-layouts does not overwrite %s's recorded layout: give the map a new version", pin)
		case *updateLayouts:
			lines = append(lines, pin+" "+got)
		default:
			t.Errorf("no layout recorded for %s: run go test ./bpfmap -update-layouts", pin)
		}
	}
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName && bpfmap.Version(name) == 0 {
			t.Errorf("the programs pin map %s, but bpfmap's list has no entry for it", name)
		}
		if regexp.MustCompile(`_v[0-9]+$`).MatchString(name) {
			t.Errorf("map %s: its name ends as a version does; the version is bpfmap's, not the name's", name)
		}
	}
	if *updateLayouts {
		slices.Sort(lines)
		if err := os.MkdirAll(filepath.Dir(layoutsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(layoutsFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// layoutHash is a short digest of what a map's bytes mean.
func layoutHash(ms *ebpf.MapSpec) string {
	s := fmt.Sprintf("%v key %d value %d flags %#x", ms.Type, ms.KeySize, ms.ValueSize, ms.Flags)
	if ms.Type == ebpf.Array || ms.Type == ebpf.PerCPUArray {
		// An array's index means something: its size is its layout.
		s += fmt.Sprintf(" entries %d", ms.MaxEntries)
	}
	s += " key " + btfLayout(ms.Key) + " value " + btfLayout(ms.Value)
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", sum[:8])
}

func btfLayout(t btf.Type) string {
	switch v := t.(type) {
	case nil:
		return "-"
	case *btf.Typedef:
		return btfLayout(v.Type)
	case *btf.Volatile:
		return btfLayout(v.Type)
	case *btf.Const:
		return btfLayout(v.Type)
	case *btf.Int:
		return fmt.Sprintf("int%d", v.Size*8)
	case *btf.Enum:
		return fmt.Sprintf("enum%d", v.Size*8)
	case *btf.Array:
		return fmt.Sprintf("[%d]%s", v.Nelems, btfLayout(v.Type))
	case *btf.Struct:
		return "{" + members(v.Members) + "}"
	case *btf.Union:
		return "union{" + members(v.Members) + "}"
	}
	return fmt.Sprintf("%T", t)
}

func members(ms []btf.Member) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s@%d:%s;", m.Name, m.Offset, btfLayout(m.Type))
	}
	return b.String()
}
