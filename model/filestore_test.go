package model

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const waitFor = 5 * time.Second

func openStore(t *testing.T, dir string, opts ...Option) *FileStore {
	t.Helper()
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	f, err := OpenFile(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// dirState maps every file and directory under dir (dotfiles included) to
// a hash of its content and its mode.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[rel+"/"] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[rel] = info.Mode().String() + " " + hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertUnchanged(t *testing.T, before, after map[string]string) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("directory changed:\nbefore %v\nafter  %v", before, after)
	}
}

func baseResources() []Resource {
	return []Resource{
		pool("pool-a", "10.65.0.0/16"),
		node("n1", "10.30.0.10/24"),
		wep("web-1", "n1", "tap1", "10.65.0.5/32"),
		wep("web-2", "n1", "tap2", "10.65.0.6/32"),
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{"file://" + dir + "/a", dir + "/b", "file:" + dir + "/c"} {
		ds, err := Open(u, WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		ds.Close()
	}
	for _, k := range []string{"ippool", "node", "workloadendpoint", "floatingip", "config", "ipamblock"} {
		if fi, err := os.Stat(filepath.Join(dir, "a", k)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("kind directory %s: %v %v", k, fi, err)
		}
	}
	tests := []struct{ url, want string }{
		{"http://x/y", `unsupported datastore scheme "http"`},
		{"relative/dir", "want file:///DIR, an absolute path, or etcd://HOST:PORT"},
		{"file://host/dir", "want an absolute path"},
	}
	for _, tt := range tests {
		_, err := Open(tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%q) = %v; want error containing %q", tt.url, err, tt.want)
		}
	}
}

func TestApplyThenSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openStore(t, dir)
	s, err := f.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Revision != 0 || len(s.Pools)+len(s.Nodes)+len(s.Endpoints) != 0 || s.Config == nil {
		t.Fatalf("fresh store snapshot: %+v", s)
	}

	// An unfilled resource is defaulted on the way in, without touching the
	// caller's copy.
	raw := &IPPool{Metadata: Metadata{Name: "pool-b"}, Spec: IPPoolSpec{CIDR: netip.MustParsePrefix("10.66.0.0/16")}}
	if err := f.Apply(ctx, append(baseResources(), raw)); err != nil {
		t.Fatal(err)
	}
	if raw.Spec.BlockSize != 0 {
		t.Fatal("Apply modified the caller's resource")
	}
	s, err = f.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Revision != 1 {
		t.Errorf("revision = %d, want 1", s.Revision)
	}
	if len(s.Pools) != 2 || len(s.Nodes) != 1 || len(s.Endpoints) != 2 {
		t.Fatalf("snapshot: %d pools %d nodes %d endpoints", len(s.Pools), len(s.Nodes), len(s.Endpoints))
	}
	if s.Pools["pool-b"].Spec.BlockSize != 26 || s.Pools["pool-b"].Spec.NodeSelector != "all()" {
		t.Errorf("defaults not stored: %+v", s.Pools["pool-b"].Spec)
	}
	if !reflect.DeepEqual(s.Endpoints["web-1"], baseResources()[2]) {
		t.Errorf("endpoint differs: %#v", s.Endpoints["web-1"])
	}

	b, err := os.ReadFile(filepath.Join(dir, "ippool", "pool-b.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"apiVersion: calyx.io/v1\n", "kind: IPPool\n", "  cidr: 10.66.0.0/16\n", "  blockSize: 26\n", "  ipipMode: Never\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("stored file lacks %q:\n%s", want, b)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ippool", "pool-b.yaml")); fi.Mode().Perm() != 0o644 {
		t.Errorf("file mode %v, want 0644", fi.Mode())
	}

	// A second store (another process) sees the same thing.
	s2, err := openStore(t, dir).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s2.Resources(""), s.Resources("")) || s2.Revision != 1 {
		t.Fatal("a second store reads a different model")
	}

	// Re-applying identical resources writes nothing.
	before := dirState(t, dir)
	if err := f.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	assertUnchanged(t, before, dirState(t, dir))

	// Replacing one bumps the revision.
	w := wep("web-1", "n1", "tap1", "10.65.0.5/32", "10.65.0.50/32")
	if err := f.Apply(ctx, []Resource{w}); err != nil {
		t.Fatal(err)
	}
	s, _ = f.Snapshot(ctx)
	if s.Revision != 2 || len(s.Endpoints["web-1"].Spec.IPNetworks) != 2 {
		t.Fatalf("after replace: revision %d, %v", s.Revision, s.Endpoints["web-1"].Spec.IPNetworks)
	}
}

func TestApplyAllOrNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openStore(t, dir)
	if err := f.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)

	t.Run("document 3 fails to decode", func(t *testing.T) {
		in := poolHead + "spec: {cidr: 10.70.0.0/16}\n---\n" +
			wepHead + "spec: {node: n1, interface: tap9, ipNetworks: [10.70.0.1/32]}\n---\n" +
			"apiVersion: calyx.io/v1\nkind: WorkloadEndpoint\nmetadata: {name: web-3}\nspec: {node: n1, interface: tap3, ipNetworks: [10.70.0.300/32]}\n"
		rs, err := Decode(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), `document 3 (WorkloadEndpoint/web-3): spec.ipNetworks[0]: "10.70.0.300/32" is not a valid CIDR`) {
			t.Fatalf("got %v", err)
		}
		if err := f.Apply(ctx, rs); err != nil {
			t.Fatal(err) // nothing to apply
		}
		assertUnchanged(t, before, dirState(t, dir))
	})

	t.Run("item 3 invalid on its own", func(t *testing.T) {
		bad := pool("pool-c", "10.80.0.0/16")
		bad.Spec.BlockSize = 40
		err := f.Apply(ctx, []Resource{pool("pool-b", "10.70.0.0/16"), wep("web-3", "n1", "tap3", "10.65.0.7/32"), bad})
		if err == nil || !strings.Contains(err.Error(), "IPPool/pool-c: spec.blockSize: must be between 20 and 32 for IPv4, got 40") {
			t.Fatalf("got %v", err)
		}
		assertUnchanged(t, before, dirState(t, dir))
	})

	t.Run("item 3 conflicts with a stored endpoint", func(t *testing.T) {
		err := f.Apply(ctx, []Resource{pool("pool-b", "10.70.0.0/16"), wep("web-3", "n1", "tap3", "10.65.0.7/32"),
			wep("web-4", "n1", "tap4", "10.65.0.5/32")})
		want := "WorkloadEndpoint/web-4: spec.ipNetworks[0]: 10.65.0.5/32 is already used by WorkloadEndpoint/web-1"
		if err == nil || err.Error() != want {
			t.Fatalf("got %v\nwant %s", err, want)
		}
		assertUnchanged(t, before, dirState(t, dir))
	})

	t.Run("address outside every pool", func(t *testing.T) {
		err := f.Apply(ctx, []Resource{wep("web-3", "n1", "tap3", "10.99.0.1/32")})
		if err == nil || !strings.Contains(err.Error(), "WorkloadEndpoint/web-3: spec.ipNetworks[0]: 10.99.0.1/32 is in no enabled, non-external IPPool") {
			t.Fatalf("got %v", err)
		}
		assertUnchanged(t, before, dirState(t, dir))
	})

	t.Run("same resource twice", func(t *testing.T) {
		err := f.Apply(ctx, []Resource{pool("pool-b", "10.70.0.0/16"), pool("pool-b", "10.71.0.0/16")})
		if err == nil || !strings.Contains(err.Error(), "IPPool/pool-b: given more than once") {
			t.Fatalf("got %v", err)
		}
		assertUnchanged(t, before, dirState(t, dir))
	})

	t.Run("rename fails midway", func(t *testing.T) {
		// Three writes: two replace stored files, one is new; the third
		// rename fails, so the first two must be put back.
		renames := 0
		f.rename = func(o, n string) error {
			renames++
			if renames == 3 {
				return errors.New("injected failure")
			}
			return os.Rename(o, n)
		}
		defer func() { f.rename = os.Rename }()
		err := f.Apply(ctx, []Resource{
			wep("web-1", "n1", "tap1", "10.65.0.5/32", "10.65.0.8/32"),
			wep("web-9", "n1", "tap9", "10.65.0.9/32"),
			wep("web-2", "n1", "tap2", "10.65.0.6/32", "10.65.0.10/32"),
		})
		if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("got %v", err)
		}
		if renames != 3 {
			t.Fatalf("%d renames, want 3", renames)
		}
		assertUnchanged(t, before, dirState(t, dir))
		// The store's own view recovers too.
		s, err := f.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.Endpoints["web-9"]; ok || len(s.Endpoints["web-1"].Spec.IPNetworks) != 1 {
			t.Fatalf("snapshot after rollback: %v", s.Endpoints)
		}
	})
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openStore(t, dir)
	if err := f.Apply(ctx, append(baseResources(), pool("pool-b", "10.70.0.0/16"), DefaultConfig())); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)

	err := f.Delete(ctx, []Ref{{KindWorkloadEndpoint, "web-1"}, {KindIPPool, "x"}})
	if err == nil || err.Error() != "IPPool/x: not found" || !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v", err)
	}
	assertUnchanged(t, before, dirState(t, dir))

	err = f.Delete(ctx, []Ref{{KindIPPool, "pool-a"}})
	if err == nil || !strings.Contains(err.Error(), "WorkloadEndpoint/web-1: spec.ipNetworks[0]: 10.65.0.5/32 is in no enabled, non-external IPPool") {
		t.Fatalf("deleting a pool in use: %v", err)
	}
	assertUnchanged(t, before, dirState(t, dir))

	// Kinds may be spelled as on the command line; duplicates are harmless.
	err = f.Delete(ctx, []Ref{{"workloadendpoints", "web-1"}, {KindWorkloadEndpoint, "web-2"}, {KindWorkloadEndpoint, "web-2"},
		{KindIPPool, "pool-a"}, {KindConfig, "default"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Endpoints) != 0 || len(s.Pools) != 1 || s.Revision != 2 || s.Config.Spec.VXLANPort != 4789 {
		t.Fatalf("after delete: %+v", s)
	}
	for _, p := range []string{"workloadendpoint/web-1.yaml", "ippool/pool-a.yaml", "config/default.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists: %v", p, err)
		}
	}
	if err := f.Delete(ctx, []Ref{{KindConfig, "default"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting the absent config: %v", err)
	}
	if err := f.Delete(ctx, []Ref{{KindIPPool, "../../etc/passwd"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path-like name: %v", err)
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := openStore(t, dir).Apply(ctx, []Resource{pool("pool-a", "10.65.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		// A store per goroutine, like separate calyxctl processes.
		st := openStore(t, dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rs []Resource
			for i := 0; i < 5; i++ {
				rs = append(rs, wep(fmt.Sprintf("ep-%d-%d", g, i), "n1", fmt.Sprintf("tap%d-%d", g, i), fmt.Sprintf("10.65.%d.%d/32", g, i+1)))
			}
			errs <- st.Apply(ctx, rs)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := openStore(t, dir).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Endpoints) != 40 || s.Revision != 9 {
		t.Fatalf("%d endpoints, revision %d; want 40, 9", len(s.Endpoints), s.Revision)
	}
}

// next waits for a snapshot satisfying ok, failing the test after waitFor.
func next(t *testing.T, ch <-chan *Snapshot, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case s, open := <-ch:
			if !open {
				t.Fatal("watch channel closed")
			}
			if ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("no matching snapshot within %v", waitFor)
		}
	}
}

func TestWatchSeesApplyAndDelete(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	f := openStore(t, dir)
	if err := f.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	ch, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := next(t, ch, func(*Snapshot) bool { return true })
	if len(first.Endpoints) != 2 || first.Revision != 1 {
		t.Fatalf("initial snapshot: %d endpoints, revision %d", len(first.Endpoints), first.Revision)
	}

	// A writer in another "process".
	other := openStore(t, dir)
	if err := other.Apply(ctx, []Resource{wep("web-3", "n1", "tap3", "10.65.0.7/32")}); err != nil {
		t.Fatal(err)
	}
	s := next(t, ch, func(s *Snapshot) bool { return s.Endpoints["web-3"] != nil && s.Revision == 2 })
	if len(s.Endpoints) != 3 {
		t.Fatalf("got %d endpoints", len(s.Endpoints))
	}
	if len(first.Endpoints) != 2 {
		t.Fatal("an earlier snapshot was modified")
	}

	if err := other.Delete(ctx, []Ref{{KindWorkloadEndpoint, "web-1"}}); err != nil {
		t.Fatal(err)
	}
	next(t, ch, func(s *Snapshot) bool { return s.Endpoints["web-1"] == nil && s.Revision == 3 })

	// A hand-deleted file is noticed too.
	if err := os.Remove(filepath.Join(dir, "workloadendpoint", "web-2.yaml")); err != nil {
		t.Fatal(err)
	}
	next(t, ch, func(s *Snapshot) bool { return s.Endpoints["web-2"] == nil })

	cancel()
	deadline := time.After(waitFor)
	for {
		select {
		case _, open := <-ch:
			if !open {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after cancel")
		}
	}
}

func TestWatchClosedByClose(t *testing.T) {
	f, err := OpenFile(t.TempDir(), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := f.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	f.Close()
	if _, open := <-ch; open {
		t.Fatal("channel still open after Close")
	}
	if _, err := f.Snapshot(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Snapshot after Close: %v", err)
	}
}

func TestWatchIsIncremental(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	f := openStore(t, dir)
	rs := []Resource{pool("pool-a", "10.64.0.0/12")}
	for i := 0; i < 2000; i++ {
		rs = append(rs, wep(fmt.Sprintf("ep-%d", i), fmt.Sprintf("n%d", i%10), fmt.Sprintf("tap%d", i), fmt.Sprintf("10.65.%d.%d/32", i/200, i%200+1)))
	}
	if err := openStore(t, dir).Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	ch, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := next(t, ch, func(*Snapshot) bool { return true }); len(s.Endpoints) != 2000 {
		t.Fatalf("initial snapshot has %d endpoints", len(s.Endpoints))
	}
	parsed := f.parses.Load()
	if err := openStore(t, dir).Apply(ctx, []Resource{wep("ep-new", "n1", "tap-new", "10.66.0.1/32")}); err != nil {
		t.Fatal(err)
	}
	s := next(t, ch, func(s *Snapshot) bool { return s.Endpoints["ep-new"] != nil })
	if len(s.Endpoints) != 2001 {
		t.Fatalf("got %d endpoints", len(s.Endpoints))
	}
	if n := f.parses.Load() - parsed; n > 5 {
		t.Fatalf("the watch parsed %d files for a one-file change", n)
	}
}

func TestWatchSurvivesCorruptFiles(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	var mu sync.Mutex
	var reported []string
	f := openStore(t, dir, WithErrorHandler(func(err error) {
		mu.Lock()
		reported = append(reported, err.Error())
		mu.Unlock()
	}))
	if err := f.Apply(ctx, baseResources()); err != nil {
		t.Fatal(err)
	}
	ch, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch, func(*Snapshot) bool { return true })

	// A new file that is not YAML, a hand edit that breaks a stored
	// resource, and a file whose content names another resource.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "ippool", "broken.yaml"), []byte("{{{ not yaml"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "workloadendpoint", "web-1.yaml"),
		[]byte(wepHead+"spec: {node: n1, interface: tap1, ipNetworks: [10.65.0.5/33]}\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "node", "n2.yaml"),
		[]byte("apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: n3}\nspec: {ipv4Address: 10.30.0.3/24}\n"), 0o644))
	// Editor and temp files are ignored.
	must(os.WriteFile(filepath.Join(dir, "ippool", ".broken.yaml.swp"), []byte("junk"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "ippool", "notes.txt"), []byte("junk"), 0o644))

	// The watch carries on.
	if err := openStore(t, dir).Apply(ctx, []Resource{wep("web-3", "n1", "tap3", "10.65.0.7/32")}); err != nil {
		t.Fatal(err)
	}
	s := next(t, ch, func(s *Snapshot) bool { return s.Endpoints["web-3"] != nil })
	if got := s.Endpoints["web-1"]; got == nil || got.Spec.IPNetworks[0].String() != "10.65.0.5/32" {
		t.Fatalf("previous version of web-1 not kept: %+v", got)
	}
	if _, ok := s.Pools["broken"]; ok {
		t.Fatal("broken pool in snapshot")
	}
	if _, ok := s.Nodes["n2"]; ok {
		t.Fatal("mismatched node in snapshot")
	}

	wantReports := []string{
		"ippool/broken.yaml: document 1: yaml:",
		`workloadendpoint/web-1.yaml: document 1 (WorkloadEndpoint/web-1): spec.ipNetworks[0]: "10.65.0.5/33" is not a valid CIDR`,
		"node/n2.yaml: holds Node/n3, but its path says Node/n2",
	}
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		all := strings.Join(reported, "\n")
		mu.Unlock()
		missing := ""
		for _, w := range wantReports {
			if !strings.Contains(all, w) {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reported: %s\nreported:\n%s", missing, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(strings.Join(reported, "\n"), "swp") || strings.Contains(strings.Join(reported, "\n"), "notes.txt") {
		t.Fatalf("ignored files were reported: %v", reported)
	}

	// Fixing the file by hand brings the new version in.
	must(os.WriteFile(filepath.Join(dir, "workloadendpoint", "web-1.yaml"),
		[]byte(wepHead+"spec: {node: n1, interface: tap1, ipNetworks: [10.65.0.55/32]}\n"), 0o644))
	next(t, ch, func(s *Snapshot) bool {
		w := s.Endpoints["web-1"]
		return w != nil && w.Spec.IPNetworks[0].String() == "10.65.0.55/32"
	})

	// Snapshot skips what it cannot parse as well.
	snap, err := openStore(t, dir).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Pools["broken"]; ok || len(snap.Endpoints) != 3 {
		t.Fatalf("Snapshot with corrupt files: %v", snap.Endpoints)
	}
}

func TestStaleTempFilesIgnoredAndCleaned(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openStore(t, dir)
	stale := filepath.Join(dir, "ippool", ".pool-x.yaml.tmp-123")
	if err := os.WriteFile(stale, []byte(poolHead+"spec: {cidr: 10.9.0.0/16}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := f.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Pools) != 0 {
		t.Fatal("temp file read as a resource")
	}
	if err := f.Apply(ctx, []Resource{pool("pool-a", "10.65.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale temp file not removed: %v", err)
	}
}

func TestFloatingIPStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openStore(t, dir)
	if err := f.Apply(ctx, fipBase()); err != nil {
		t.Fatal(err)
	}
	fip1 := fip("web-1-fip", "198.51.100.10", "web-1", "")
	fip2 := fip("web-2-fip", "198.51.100.11", "web-2", "10.65.1.4")
	if err := f.Apply(ctx, []Resource{fip1, fip2}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "floatingip", "web-1-fip.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata:\n  name: web-1-fip\nspec:\n  ip: 198.51.100.10\n  endpoint: web-1\n"
	if string(b) != want {
		t.Fatalf("stored file:\n%s\nwant\n%s", b, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "floatingip", "web-2-fip.yaml")); !strings.Contains(string(b), "  fixedIP: 10.65.1.4\n") {
		t.Fatalf("stored file lacks fixedIP:\n%s", b)
	}

	// Another store (another process) reads back what was applied.
	s, err := openStore(t, dir).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.FloatingIPs, map[string]*FloatingIP{"web-1-fip": fip1, "web-2-fip": fip2}) {
		t.Fatalf("floating IPs read back: %v", s.FloatingIPs)
	}
	if a, ok := s.FixedIP(s.FloatingIPs["web-1-fip"]); !ok || a.String() != "10.65.1.2" {
		t.Fatalf("FixedIP = %v, %v", a, ok)
	}
	before := dirState(t, dir)

	refused := []struct {
		name string
		do   func() error
		want string
	}{
		{"delete the endpoint", func() error { return f.Delete(ctx, []Ref{{KindWorkloadEndpoint, "web-1"}}) },
			"FloatingIP/web-1-fip: spec.endpoint: WorkloadEndpoint/web-1 does not exist"},
		{"delete the external pool", func() error { return f.Delete(ctx, []Ref{{KindIPPool, "ext"}}) },
			"FloatingIP/web-1-fip: spec.ip: 198.51.100.10 is in no enabled, external IPPool (there is none; floating IPs are taken from IPPools with external: true)\n" +
				"FloatingIP/web-2-fip: spec.ip: 198.51.100.11 is in no enabled, external IPPool (there is none; floating IPs are taken from IPPools with external: true)"},
		{"take the fixed IP off the endpoint", func() error { return f.Apply(ctx, []Resource{wep("web-2", "n1", "tap2", "10.65.1.3/32")}) },
			"FloatingIP/web-2-fip: spec.fixedIP: 10.65.1.4 is not an address of WorkloadEndpoint/web-2 (10.65.1.3/32)"},
		{"a second floating IP for one address", func() error { return f.Apply(ctx, []Resource{fip("again", "198.51.100.12", "web-1", "10.65.1.2")}) },
			"FloatingIP/again: spec.fixedIP: 10.65.1.2 of WorkloadEndpoint/web-1 already has FloatingIP/web-1-fip; an address can have only one floating IP"},
		{"an address taken", func() error { return f.Apply(ctx, []Resource{fip("again", "198.51.100.10", "web-2", "10.65.1.3")}) },
			"FloatingIP/again: spec.ip: 198.51.100.10 is already used by FloatingIP/web-1-fip"},
		{"an IPv6 floating IP", func() error { return f.Apply(ctx, []Resource{fip("v6", "2001:db8::10", "web-1", "")}) },
			"FloatingIP/v6: spec.ip: 2001:db8::10 is an IPv6 address; IPv6 floating IPs are not supported yet"},
		// IPPool.external: no workload takes an address from an external pool.
		{"a workload in the external pool", func() error { return f.Apply(ctx, []Resource{wep("web-3", "n1", "tap9", "198.51.100.50/32")}) },
			"WorkloadEndpoint/web-3: spec.ipNetworks[0]: 198.51.100.50/32 is in no enabled, non-external IPPool (IPPool/ext, which contains it, is external)"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got %v\nwant %s", err, tt.want)
			}
			assertUnchanged(t, before, dirState(t, dir))
		})
	}

	// The endpoint goes with its floating IP, or after it.
	if err := f.Delete(ctx, []Ref{{"floatingip", "web-1-fip"}, {KindWorkloadEndpoint, "web-1"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(ctx, []Ref{{KindFloatingIP, "web-2-fip"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(ctx, []Ref{{KindFloatingIP, "web-2-fip"}}); err == nil || err.Error() != "FloatingIP/web-2-fip: not found" {
		t.Fatalf("deleting it again: %v", err)
	}
	s, _ = f.Snapshot(ctx)
	if len(s.FloatingIPs) != 0 || s.Endpoints["web-1"] != nil {
		t.Fatalf("after delete: %v %v", s.FloatingIPs, s.Endpoints)
	}
	for _, p := range []string{"floatingip/web-1-fip.yaml", "floatingip/web-2-fip.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists: %v", p, err)
		}
	}
}

func TestWatchSeesFloatingIPs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	var mu sync.Mutex
	var reported []string
	f := openStore(t, dir, WithErrorHandler(func(err error) {
		mu.Lock()
		reported = append(reported, err.Error())
		mu.Unlock()
	}))
	if err := f.Apply(ctx, fipBase()); err != nil {
		t.Fatal(err)
	}
	ch, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := next(t, ch, func(*Snapshot) bool { return true }); len(s.FloatingIPs) != 0 || s.FloatingIPs == nil {
		t.Fatalf("initial snapshot floating IPs: %v", s.FloatingIPs)
	}

	other := openStore(t, dir)
	if err := other.Apply(ctx, []Resource{fip("web-1-fip", "198.51.100.10", "web-1", "")}); err != nil {
		t.Fatal(err)
	}
	s := next(t, ch, func(s *Snapshot) bool { return s.FloatingIPs["web-1-fip"] != nil })
	if got := s.FloatingIPs["web-1-fip"]; got.Spec.IP.String() != "198.51.100.10" || got.Spec.Endpoint != "web-1" {
		t.Fatalf("watched floating IP: %+v", got)
	}

	// A hand-written file is picked up; a broken one is reported and skipped.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "floatingip", "web-2-fip.yaml"),
		[]byte("apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: web-2-fip}\nspec: {ip: 198.51.100.11, endpoint: web-2, fixedIP: 10.65.1.4}\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "floatingip", "bad.yaml"),
		[]byte("apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: bad}\nspec: {ip: 198.51.100.12/32, endpoint: web-2}\n"), 0o644))
	s = next(t, ch, func(s *Snapshot) bool { return s.FloatingIPs["web-2-fip"] != nil })
	if a, ok := s.FixedIP(s.FloatingIPs["web-2-fip"]); !ok || a.String() != "10.65.1.4" {
		t.Fatalf("FixedIP of the hand-written floating IP: %v %v", a, ok)
	}
	wantReport := `floatingip/bad.yaml: document 1 (FloatingIP/bad): spec.ip: "198.51.100.12/32" is not a valid IP address`
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		all := strings.Join(reported, "\n")
		mu.Unlock()
		if strings.Contains(all, wantReport) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reported: %s\nreported:\n%s", wantReport, all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(os.Remove(filepath.Join(dir, "floatingip", "bad.yaml")))

	if err := other.Delete(ctx, []Ref{{KindFloatingIP, "web-1-fip"}}); err != nil {
		t.Fatal(err)
	}
	s = next(t, ch, func(s *Snapshot) bool { return s.FloatingIPs["web-1-fip"] == nil })
	if _, ok := s.FloatingIPs["bad"]; ok || len(s.FloatingIPs) != 1 {
		t.Fatalf("floating IPs after delete: %v", s.FloatingIPs)
	}
}

// TestFileStoreWriteSeesOutsideChanges: after its first write a store
// re-reads only the files its inotify queue names, so every way another
// party changes the directory between two writes (another process's store,
// an in-place edit, a delete, a kind directory replaced) must still be
// checked against.
func TestFileStoreWriteSeesOutsideChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := openStore(t, dir), openStore(t, dir)
	if err := a.Apply(ctx, []Resource{pool("pool-a", "10.65.0.0/16"), wep("ep-1", "n1", "tap1", "10.65.0.1/32")}); err != nil {
		t.Fatal(err)
	}
	duplicate := func(name, addr string) {
		t.Helper()
		err := a.Apply(ctx, []Resource{wep(name, "n1", "tap-"+name, addr)})
		if err == nil || !strings.Contains(err.Error(), addr[:len(addr)-3]) {
			t.Fatalf("%s with %s: got %v, want it refused as a duplicate address", name, addr, err)
		}
	}
	// Another store (another process) writes.
	if err := b.Apply(ctx, []Resource{wep("ep-2", "n1", "tap2", "10.65.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	duplicate("ep-3", "10.65.0.2/32")
	// A hand edit in place (no rename).
	path := filepath.Join(dir, "workloadendpoint", "ep-1.yaml")
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.Write([]byte(strings.Replace(string(old), "10.65.0.1/32", "10.65.0.9/32", 1)))
	fh.Close()
	duplicate("ep-4", "10.65.0.9/32")
	// A delete makes the address free again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, []Resource{wep("ep-5", "n1", "tap5", "10.65.0.9/32")}); err != nil {
		t.Fatalf("address of a deleted file: %v", err)
	}
	// The kind directory replaced wholesale: the watch on it is gone.
	epDir := filepath.Join(dir, "workloadendpoint")
	if err := os.Rename(epDir, epDir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(epDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(epDir, "ep-6.yaml"), []byte("apiVersion: calyx.io/v1\nkind: WorkloadEndpoint\nmetadata: {name: ep-6}\nspec: {node: n1, interface: tap6, ipNetworks: [10.65.0.6/32]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	duplicate("ep-7", "10.65.0.6/32")
	s, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Endpoints["ep-5"]; ok {
		t.Fatal("ep-5 still seen after its directory was replaced")
	}
}

// TestWatchSnapshotsEqualTheStore: each snapshot the watch makes from the
// last one and the files that changed holds what a fresh read holds.
func TestWatchSnapshotsEqualTheStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	f := openStore(t, dir)
	if err := f.Apply(ctx, []Resource{pool("pool-a", "10.65.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	ch, err := f.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writer := openStore(t, dir)
	r := rand.New(rand.NewPCG(7, 7))
	for step := range 40 {
		name := fmt.Sprintf("ep-%d", r.IntN(8))
		var err error
		switch r.IntN(3) {
		case 0, 1:
			err = writer.Apply(ctx, []Resource{wep(name, "n1", "tap-"+name, fmt.Sprintf("10.65.0.%d/32", 1+step))})
		case 2:
			err = writer.Delete(ctx, []Ref{{KindWorkloadEndpoint, name}})
			if errors.Is(err, ErrNotFound) {
				continue
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		read, err := writer.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := next(t, ch, func(s *Snapshot) bool { return s.Revision == read.Revision })
		if !reflect.DeepEqual(got.Endpoints, read.Endpoints) || !reflect.DeepEqual(got.Pools, read.Pools) {
			t.Fatalf("step %d: the watch has %v, the store %v", step, slices.Sorted(maps.Keys(got.Endpoints)), slices.Sorted(maps.Keys(read.Endpoints)))
		}
	}
}
