package undo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/agent/undo"
	"github.com/calyxnet/calyx/tests/lab"
)

func ledger(t *testing.T) (*undo.Ledger, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		lab.SkipOrFailInCI(t, "not root: the undo ledger needs a bpffs and BPF maps")
	}
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	l, err := undo.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, dir
}

// SetSysctl records a setting's value before it first changes it, and
// only then: a second change (an agent restart) keeps the host's original,
// and a setting already at the value is neither written nor recorded. The
// ledger is pinned: a reopened one holds the same.
func TestSetSysctlRecordsTheFirstOriginal(t *testing.T) {
	l, dir := ledger(t)
	files := t.TempDir()
	fwd, same := filepath.Join(files, "ip_forward"), filepath.Join(files, "arp_announce")
	must(t, os.WriteFile(fwd, []byte("0\n"), 0o644))
	must(t, os.WriteFile(same, []byte("2\n"), 0o644))

	if changed, err := undo.SetSysctl(l, fwd, "1"); err != nil || !changed {
		t.Fatalf("SetSysctl %s: changed %v, %v", fwd, changed, err)
	}
	must(t, os.WriteFile(fwd, []byte("7"), 0o644)) // someone else, meanwhile
	if _, err := undo.SetSysctl(l, fwd, "1"); err != nil {
		t.Fatal(err)
	}
	if changed, err := undo.SetSysctl(l, same, "2"); err != nil || changed {
		t.Fatalf("SetSysctl %s to its own value: changed %v, %v", same, changed, err)
	}
	if b, _ := os.ReadFile(fwd); string(b) != "1" {
		t.Errorf("%s = %q, want 1", fwd, b)
	}

	again, err := undo.Open(dir)
	must(t, err)
	defer again.Close()
	got, err := again.Changes()
	must(t, err)
	if len(got) != 1 || got[0] != (undo.Change{Setting: fwd, Original: "0"}) {
		t.Errorf("changes %+v, want only %s = 0 (the first original)", got, fwd)
	}
}

// A value too long for the ledger is refused with the setting named, and
// the setting is left as it was: changed without its original, it could
// never be put back.
func TestSetSysctlRefusesWhatItCannotRecord(t *testing.T) {
	l, _ := ledger(t)
	p := filepath.Join(t.TempDir(), "ip_local_reserved_ports")
	long := strings.Repeat("1,", 600)
	must(t, os.WriteFile(p, []byte(long), 0o644))
	_, err := undo.SetSysctl(l, p, "20000-29999")
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("SetSysctl with a %d-byte original: %v, want an error naming %s", len(long), err, p)
	}
	if b, _ := os.ReadFile(p); string(b) != long {
		t.Errorf("the setting changed although its original was not recorded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Prune forgets the settings whose file is gone (an interface that went)
// and keeps the others.
func TestPruneForgetsGoneSettings(t *testing.T) {
	l, _ := ledger(t)
	files := t.TempDir()
	kept, gone := filepath.Join(files, "kept"), filepath.Join(files, "gone")
	for _, p := range []string{kept, gone} {
		must(t, os.WriteFile(p, []byte("0"), 0o644))
		if _, err := undo.SetSysctl(l, p, "1"); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Remove(gone))
	if n, err := l.Prune(); err != nil || n != 1 {
		t.Fatalf("Prune: %d, %v; want 1 forgotten", n, err)
	}
	got, err := l.Changes()
	must(t, err)
	if len(got) != 1 || got[0].Setting != kept {
		t.Errorf("after Prune: %+v, want only %s", got, kept)
	}
}
