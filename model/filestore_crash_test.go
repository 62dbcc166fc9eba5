package model

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crashOpt makes a store ask hook before every step of a commit, and of
// finishing one, whether to stop there as if the process died.
func crashOpt(hook func(step string) bool) Option {
	return func(o *options) { o.crashAt = hook }
}

// crashPlan records the steps a store asks about and stops it at step at
// (counted from 0; -1: never).
type crashPlan struct {
	at    int
	steps []string
}

func (p *crashPlan) hook(step string) bool {
	p.steps = append(p.steps, step)
	return len(p.steps)-1 == p.at
}

// commitMixed writes and deletes in one commit, which no public method
// does, through the path they all take (beginWrite, writeOp, deleteOp,
// commit).
func commitMixed(ctx context.Context, f *FileStore, writes []Resource, deletes []Ref) error {
	before, done, err := f.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer done()
	var ops []*fileOp
	for _, r := range writes {
		c := deepCopy(r)
		ApplyDefaults(c)
		op, err := f.writeOp(c)
		if err != nil {
			return err
		}
		if op != nil {
			ops = append(ops, op)
		}
	}
	for _, ref := range deletes {
		ops = append(ops, f.deleteOp(ref))
	}
	return f.commit(ops, before.Revision)
}

// copyTree copies the store directory src to dst, side files included.
// Hard links become copies, which nothing in recovery relies on.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// leftovers lists the temporaries, backups and intent under dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !d.IsDir() && strings.HasPrefix(d.Name(), ".") && rel != lockFile && rel != revisionFile {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storeModel is what a store holds: its resources and revision.
type storeModel struct {
	res []Resource
	rev uint64
}

func readModel(t *testing.T, f *FileStore) storeModel {
	t.Helper()
	s, err := f.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return storeModel{s.Resources(""), s.Revision}
}

// checkRecovered opens the store at dir, which finishes what a crash left,
// and checks that it holds exactly old or exactly new (wantNew says which),
// that no side file is left, and that the store takes a write.
func checkRecovered(t *testing.T, dir string, before, after storeModel, wantNew bool) {
	t.Helper()
	f := openStore(t, dir)
	got := readModel(t, f)
	want, name := before, "old"
	if wantNew {
		want, name = after, "new"
	}
	if !reflect.DeepEqual(got, want) {
		which := "a mix of old and new"
		switch {
		case reflect.DeepEqual(got, before):
			which = "the old model"
		case reflect.DeepEqual(got, after):
			which = "the new model"
		case reflect.DeepEqual(got.res, before.res) || reflect.DeepEqual(got.res, after.res):
			which = fmt.Sprintf("a whole model at revision %d", got.rev)
		}
		t.Fatalf("after recovery the store holds %s; want the %s one (revision %d)", which, name, want.rev)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("side files left after recovery: %v", l)
	}
	if err := f.Apply(context.Background(), []Resource{wep("web-9", "n1", "tap9", "10.65.0.99/32")}); err != nil {
		t.Fatalf("apply after recovery: %v", err)
	}
	if rev := readModel(t, f).rev; rev != want.rev+1 {
		t.Fatalf("revision after the next apply: %d, want %d", rev, want.rev+1)
	}
	f.Close()
}

// crashWhileRecovering stops the recovery of the crashed store at dir at
// each of its steps in turn (on copies), then checks that the next
// recovery finishes it as wanted.
func crashWhileRecovering(t *testing.T, crashed string, before, after storeModel, wantNew bool) {
	t.Helper()
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	record := &crashPlan{at: -1}
	dir := crashed + "-recover"
	copyTree(t, crashed, dir)
	f, err := OpenFile(dir, quiet, crashOpt(record.hook))
	if err != nil {
		t.Fatalf("recovery: %v", err)
	}
	f.Close()
	checkRecovered(t, dir, before, after, wantNew)
	os.RemoveAll(dir)
	if len(record.steps) == 0 {
		t.Fatal("recovery took no steps")
	}
	for j, step := range record.steps {
		t.Run(fmt.Sprintf("recovery %02d %s", j, step), func(t *testing.T) {
			dir := fmt.Sprintf("%s-recover-%02d", crashed, j)
			copyTree(t, crashed, dir)
			if _, err := OpenFile(dir, quiet, crashOpt((&crashPlan{at: j}).hook)); !errors.Is(err, errCrashed) {
				t.Fatalf("recovery stopped before %q: got %v", step, err)
			}
			checkRecovered(t, dir, before, after, wantNew)
			os.RemoveAll(dir)
		})
	}
}

// TestFileStoreCrashAtEveryStep stops a commit of three changed, one new
// and one deleted file at every step it takes, as if the process died there
// (nothing cleaned up, the lock released), and checks that the next store
// opened on the directory holds the old model before the intent is written
// and the new one after, never a mix; and the same for a crash at every
// step of that recovery, and of undoing a commit whose rename failed.
func TestFileStoreCrashAtEveryStep(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	tmpl := filepath.Join(root, "template")
	n2 := node("n2", "10.30.0.11/24")
	n2.Metadata.Labels = map[string]string{"rack": "a"}
	initial := []Resource{
		pool("pool-a", "10.65.0.0/16"),
		node("n1", "10.30.0.10/24"), n2,
		wep("web-1", "n1", "tap1", "10.65.0.1/32"),
		wep("web-2", "n1", "tap2", "10.65.0.2/32"),
		wep("web-3", "n1", "tap3", "10.65.0.3/32"),
		wep("web-4", "n1", "tap4", "10.65.0.4/32"),
	}
	f := openStore(t, tmpl)
	if err := f.Apply(ctx, initial); err != nil {
		t.Fatal(err)
	}
	before := readModel(t, f)
	f.Close()

	n2b := node("n2", "10.30.0.11/24")
	n2b.Metadata.Labels = map[string]string{"rack": "b"}
	writes := []Resource{
		wep("web-1", "n1", "tap1", "10.65.0.1/32", "10.65.1.1/32"),
		n2b,
		wep("web-2", "n1", "tap2", "10.65.0.2/32", "10.65.1.2/32"),
		wep("web-5", "n1", "tap5", "10.65.0.5/32"),
	}
	deletes := []Ref{{KindWorkloadEndpoint, "web-4"}}

	// commit runs the commit on a fresh copy of the template at dir,
	// stopping as plan says, with rename (when set) as the store's rename.
	commit := func(t *testing.T, dir string, plan *crashPlan, rename func(o, n string) error) error {
		t.Helper()
		copyTree(t, tmpl, dir)
		f := openStore(t, dir, crashOpt(plan.hook))
		if rename != nil {
			f.rename = rename
		}
		err := commitMixed(ctx, f, writes, deletes)
		f.Close()
		return err
	}
	intentOnDisk := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, intentFile))
		return err == nil
	}

	record := &crashPlan{at: -1}
	dir := filepath.Join(root, "record")
	if err := commit(t, dir, record, nil); err != nil {
		t.Fatal(err)
	}
	f = openStore(t, dir)
	after := readModel(t, f)
	f.Close()
	if after.rev != before.rev+1 || reflect.DeepEqual(after.res, before.res) {
		t.Fatalf("the commit made revision %d from %d", after.rev, before.rev)
	}
	steps := record.steps
	t.Logf("a commit of 3 changed, 1 new and 1 deleted file takes %d steps: %q", len(steps), steps)
	commitPoint := slices.Index(steps, "rename "+intentFile) // stopping before it: no intent
	intentGone := slices.Index(steps, "remove intent")       // stopping after it: no intent
	if commitPoint < 0 || intentGone < commitPoint {
		t.Fatalf("steps lack the intent's: %q", steps)
	}

	for k, step := range steps {
		t.Run(fmt.Sprintf("%02d %s", k, step), func(t *testing.T) {
			dir := filepath.Join(root, fmt.Sprintf("crash-%02d", k))
			if err := commit(t, dir, &crashPlan{at: k}, nil); !errors.Is(err, errCrashed) {
				t.Fatalf("commit stopped before %q returned %v", step, err)
			}
			wantNew := k > commitPoint
			if has, want := intentOnDisk(dir), k > commitPoint && k <= intentGone; has != want {
				t.Fatalf("intent on disk: %v, want %v", has, want)
			}
			if intentOnDisk(dir) {
				crashWhileRecovering(t, dir, before, after, wantNew)
			}
			checkRecovered(t, dir, before, after, wantNew)
			os.RemoveAll(dir)
		})
	}

	// The second rename fails: the commit is turned around and undone. A
	// crash before the turned intent is written rolls it forward instead.
	failSecond := func() func(o, n string) error {
		renames := 0
		return func(o, n string) error {
			if renames++; renames == 2 {
				return errors.New("injected failure")
			}
			return os.Rename(o, n)
		}
	}
	record = &crashPlan{at: -1}
	dir = filepath.Join(root, "record-undo")
	if err := commit(t, dir, record, failSecond()); err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "(nothing was changed)") {
		t.Fatalf("commit with a failing rename: %v", err)
	}
	checkRecovered(t, dir, before, after, false)
	steps = record.steps
	turn := slices.Index(steps, "turn back")
	backPoint := turn + slices.Index(steps[turn:], "rename "+intentFile)
	if turn < 0 || backPoint < turn {
		t.Fatalf("undo steps lack turning the intent: %q", steps)
	}
	for k := turn; k < len(steps); k++ {
		t.Run(fmt.Sprintf("undo %02d %s", k, steps[k]), func(t *testing.T) {
			dir := filepath.Join(root, fmt.Sprintf("undo-%02d", k))
			if err := commit(t, dir, &crashPlan{at: k}, failSecond()); !errors.Is(err, errCrashed) {
				t.Fatalf("undo stopped before %q returned %v", steps[k], err)
			}
			wantNew := k <= backPoint
			if intentOnDisk(dir) {
				crashWhileRecovering(t, dir, before, after, wantNew)
			}
			checkRecovered(t, dir, before, after, wantNew)
			os.RemoveAll(dir)
		})
	}

	// Readers already open when the writer dies finish its commit before
	// they read: Snapshot and Get at once, a watch once its events settle;
	// none of them ever returns the half-renamed model on disk.
	halfway := func(t *testing.T, dir string) {
		t.Helper()
		w := openStore(t, dir, crashOpt((&crashPlan{at: slices.Index(steps, "rename node/n2.yaml")}).hook))
		if err := commitMixed(ctx, w, writes, deletes); !errors.Is(err, errCrashed) {
			t.Fatalf("commit: %v", err)
		}
		w.Close()
	}
	t.Run("snapshot and get finish it", func(t *testing.T) {
		dir := filepath.Join(root, "reader")
		copyTree(t, tmpl, dir)
		reader := openStore(t, dir)
		readModel(t, reader)
		halfway(t, dir)
		if got, _, err := reader.Get(ctx, Ref{KindNode, "n2"}); err != nil || got.(*Node).Metadata.Labels["rack"] != "b" {
			t.Fatalf("Get after the crash: %v, %v", got, err)
		}
		if got := readModel(t, reader); !reflect.DeepEqual(got, after) {
			t.Fatalf("Snapshot after the crash: revision %d, not the new model", got.rev)
		}
		if l := leftovers(t, dir); len(l) > 0 {
			t.Fatalf("side files left: %v", l)
		}
	})
	t.Run("watch finishes it", func(t *testing.T) {
		dir := filepath.Join(root, "watcher")
		copyTree(t, tmpl, dir)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := openStore(t, dir).Watch(wctx)
		if err != nil {
			t.Fatal(err)
		}
		next(t, ch, func(*Snapshot) bool { return true })
		halfway(t, dir)
		next(t, ch, func(s *Snapshot) bool {
			got := storeModel{s.Resources(""), s.Revision}
			if !reflect.DeepEqual(got, before) && !reflect.DeepEqual(got, after) {
				t.Fatalf("the watch sent a model that is neither the old nor the new one (revision %d)", got.rev)
			}
			return reflect.DeepEqual(got, after)
		})
		if l := leftovers(t, dir); len(l) > 0 {
			t.Fatalf("side files left: %v", l)
		}
	})

	// An intent cut short (a torn write) means the commit never started.
	t.Run("torn intent", func(t *testing.T) {
		dir := filepath.Join(root, "torn")
		if err := commit(t, dir, &crashPlan{at: commitPoint + 1}, nil); !errors.Is(err, errCrashed) {
			t.Fatal(err)
		}
		path := filepath.Join(dir, intentFile)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b[:len(b)/2], 0o644); err != nil {
			t.Fatal(err)
		}
		checkRecovered(t, dir, before, after, false)
	})

	// A whole intent naming a file it does not own is refused, not carried
	// out, and left for a person to look at.
	t.Run("bad intent", func(t *testing.T) {
		dir := filepath.Join(root, "bad")
		if err := commit(t, dir, &crashPlan{at: commitPoint + 1}, nil); !errors.Is(err, errCrashed) {
			t.Fatal(err)
		}
		path := filepath.Join(dir, intentFile)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		fields := strings.Fields(lines[3])
		fields[3] = "../../../etc/passwd"
		lines[3] = strings.Join(fields, " ")
		body := strings.Join(lines[:len(lines)-1], "\n") + "\n"
		bad := fmt.Sprintf("%ssha256 %x\n", body, sha256.Sum256([]byte(body)))
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		before := dirState(t, dir)
		_, err = OpenFile(dir, WithLogger(slog.New(slog.DiscardHandler)))
		want := `.intent line 4: "../../../etc/passwd" is not a tmp file of workloadendpoint/web-1.yaml`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("opening a store with a bad intent: %v\nwant %s", err, want)
		}
		assertUnchanged(t, before, dirState(t, dir))
	})
}

const killedWriterEnv = "CALYX_TEST_KILLED_WRITER_DIR"

// TestFileStoreKilledWriter kills (SIGKILL) a process that commits a large
// multi-file change in a loop, at random moments, and checks after each
// kill that the store, once reopened, holds one whole generation of the
// change, at the revision that many commits make.
func TestFileStoreKilledWriter(t *testing.T) {
	const endpoints = 40 // past syncfsThreshold: the batched commit
	if dir := os.Getenv(killedWriterEnv); dir != "" {
		killedWriter(dir, endpoints)
		return
	}
	ctx := context.Background()
	dir := t.TempDir()
	rs := []Resource{pool("pool-a", "10.65.0.0/16"), node("n1", "10.30.0.10/24")}
	rs = append(rs, generation(0, endpoints)...)
	f := openStore(t, dir)
	if err := f.Apply(ctx, rs); err != nil {
		t.Fatal(err)
	}
	rev0 := readModel(t, f).rev
	f.Close()

	// A watch that lives through all the kills sees whole generations only.
	wctx, cancel := context.WithCancel(ctx)
	ch, err := openStore(t, dir).Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	watched := make(chan error, 1)
	sent := 0
	go func() {
		n := 0
		var bad error
		for s := range ch {
			n++
			if err := wholeGeneration(s, endpoints, rev0); err != nil && bad == nil {
				bad = fmt.Errorf("snapshot %d from the watch: %w", n, err)
			}
		}
		if bad == nil && n < 2 {
			bad = fmt.Errorf("the watch sent %d snapshots", n)
		}
		sent = n // read after watched is
		watched <- bad
	}()

	midCommit := 0
	for i := range 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreKilledWriter$", "-test.count=1")
		cmd.Env = append(os.Environ(), killedWriterEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready <- true
					return
				}
			}
			ready <- false
		}()
		select {
		case ok := <-ready:
			if !ok {
				cmd.Wait()
				t.Fatalf("writer %d exited before it was ready: %s", i, stderr.String())
			}
		case <-time.After(waitFor):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("writer %d not ready within %v: %s", i, waitFor, stderr.String())
		}
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); cmd.ProcessState.Exited() {
			t.Fatalf("writer %d exited by itself (%v): %s", i, err, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(dir, intentFile)); err == nil {
			midCommit++
		}

		f := openStore(t, dir)
		s, err := f.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := wholeGeneration(s, endpoints, rev0); err != nil {
			t.Fatalf("after kill %d: %v", i, err)
		}
		if l := leftovers(t, dir); len(l) > 0 {
			t.Fatalf("after kill %d: side files left: %v", i, l)
		}
		f.Close()
	}
	time.Sleep(100 * time.Millisecond) // the watch's last snapshot
	cancel()
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	s, _ := openStore(t, dir).Snapshot(ctx)
	t.Logf("20 kills: %d commits made in all, %d kills left an intent to finish, the watch sent %d whole snapshots", generationOf(s), midCommit, sent)
}

// generation returns the endpoints of generation g of the killed writer's
// change: every endpoint labelled with g, and one endpoint of g's own
// (which the next generation deletes).
func generation(g, endpoints int) []Resource {
	var rs []Resource
	for i := range endpoints {
		w := wep(fmt.Sprintf("ep-%d", i), "n1", fmt.Sprintf("tap%d", i), fmt.Sprintf("10.65.0.%d/32", i+1))
		w.Metadata.Labels = map[string]string{"gen": strconv.Itoa(g)}
		rs = append(rs, w)
	}
	if g > 0 {
		rs = append(rs, wep(fmt.Sprintf("extra-%d", g), "n1", "tap-extra", fmt.Sprintf("10.65.%d.%d/32", 1+g/250, 1+g%250)))
	}
	return rs
}

// wholeGeneration says (nil) whether s holds one whole generation of the
// killed writer's change, at the revision that many commits make.
func wholeGeneration(s *Snapshot, endpoints int, rev0 uint64) error {
	gen := generationOf(s)
	want := &Snapshot{Endpoints: map[string]*WorkloadEndpoint{}}
	for _, r := range generation(gen, endpoints) {
		c := deepCopy(r)
		ApplyDefaults(c)
		want.Put(c)
	}
	if !reflect.DeepEqual(s.Endpoints, want.Endpoints) {
		return fmt.Errorf("the endpoints are not one whole generation (%d)", gen)
	}
	if s.Revision != rev0+uint64(gen) {
		return fmt.Errorf("generation %d at revision %d, want %d", gen, s.Revision, rev0+uint64(gen))
	}
	return nil
}

func generationOf(s *Snapshot) int {
	g, _ := strconv.Atoi(s.Endpoints["ep-0"].Metadata.Labels["gen"])
	return g
}

// killedWriter is the process TestFileStoreKilledWriter kills: it commits
// the next generation over the last, over and over, for at most 20s.
func killedWriter(dir string, endpoints int) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx := context.Background()
	f, err := OpenFile(dir, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fail(err)
	}
	fmt.Println("ready")
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
		s, err := f.Snapshot(ctx)
		if err != nil {
			fail(err)
		}
		g := generationOf(s) + 1
		var deletes []Ref
		if g > 1 {
			deletes = []Ref{{KindWorkloadEndpoint, fmt.Sprintf("extra-%d", g-1)}}
		}
		if err := commitMixed(ctx, f, generation(g, endpoints), deletes); err != nil {
			fail(err)
		}
	}
	os.Exit(0)
}
