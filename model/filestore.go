package model

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FileStore is the embedded datastore: one YAML file per resource at
// <dir>/<kind-lowercase>/<name>.yaml, in canonical form. Writers in any
// process serialize on an flock of <dir>/.lock; <dir>/.revision counts the
// changes.
//
// A commit (one Apply, Delete, Create, Update or DeleteIf) is atomic
// across a crash: a writer that dies at any point, even between the
// renames of a multi-file apply, leaves an intent log (<dir>/.intent, see
// fileintent.go) from which the next process to open, read or write the
// store makes the commit whole or undoes it, before anyone reads the model.
// Readers see the model before a commit or after it, never in between, and
// the revision changes exactly once per commit made.
type FileStore struct {
	dir  string
	opts options

	mu    sync.Mutex // guards cache, fresh and model
	cache *fileCache
	fresh *freshness // what changed since this process's last write; nil before it
	// model is the writer's model as of its last write, kept (with its
	// check index) between writes and changed in place: never handed out.
	model *Snapshot

	staleSwept atomic.Bool // a write has removed dead writers' temporaries

	parses atomic.Int64

	done      chan struct{}
	closeOnce sync.Once
	watches   sync.WaitGroup

	// rename is os.Rename; tests replace it to make a commit fail midway.
	rename func(oldpath, newpath string) error
}

var _ Datastore = (*FileStore)(nil)

const (
	lockFile     = ".lock"
	revisionFile = ".revision"
	// syncfsThreshold is the batch size above which one syncfs replaces the
	// per-file fsyncs.
	syncfsThreshold = 8
)

// OpenFile opens the file datastore at dir, creating dir and its kind
// directories (mode 0755) when missing. When no other process holds the
// writers' lock it finishes a commit a crashed writer left and removes its
// temporary files. It returns an error when the directories cannot be
// created, dir is not a directory, or an interrupted commit cannot be
// finished (e.g. the directory is read-only to this user).
func OpenFile(dir string, opts ...Option) (*FileStore, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating datastore directory: %w", err)
	}
	for _, k := range kindOrder {
		if err := os.MkdirAll(filepath.Join(dir, kindDir(k)), 0o755); err != nil {
			return nil, fmt.Errorf("creating datastore directory: %w", err)
		}
	}
	f := &FileStore{dir: dir, opts: o, done: make(chan struct{}), rename: os.Rename}
	f.cache = newFileCache(dir, &f.parses)
	if err := f.recoverIfFree(); err != nil {
		return nil, err
	}
	return f, nil
}

// Dir returns the datastore directory.
func (f *FileStore) Dir() string { return f.dir }

func (f *FileStore) closed() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// Close stops every watch (their channels are closed) and waits for them to
// finish. It always returns nil.
func (f *FileStore) Close() error {
	f.closeOnce.Do(func() { close(f.done) })
	f.watches.Wait()
	f.mu.Lock()
	if f.fresh != nil {
		f.fresh.close()
		f.fresh = nil
	}
	f.mu.Unlock()
	return nil
}

func (f *FileStore) report(err error) {
	f.opts.logger.Warn("datastore: skipping resource file", "dir", f.dir, "err", err)
	if f.opts.onError != nil {
		f.opts.onError(err)
	}
}

// openLock opens the lock file of the store at dir, creating it. For a
// reader (how is unix.LOCK_SH) that cannot create it (a read-only
// directory) it returns nil, nil: no writer has ever written there.
func openLock(dir string, how int) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	lf, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil && how == unix.LOCK_SH {
		if lf, err = os.Open(path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	return lf, nil
}

// lock takes the store's flock, polling so that ctx can cancel the wait.
// A reader that cannot create the lock file (a read-only directory) reads
// without it.
func (f *FileStore) lock(ctx context.Context, how int) (func(), error) {
	path := filepath.Join(f.dir, lockFile)
	lf, err := openLock(f.dir, how)
	if err != nil {
		return nil, err
	}
	if lf == nil {
		return func() {}, nil
	}
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := unix.Flock(int(lf.Fd()), how|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			lf.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			lf.Close()
			return nil, fmt.Errorf("waiting for the datastore lock: %w", ctx.Err())
		case <-f.done:
			lf.Close()
			return nil, ErrClosed
		case <-time.After(delay):
		}
	}
	return func() {
		_ = unix.Flock(int(lf.Fd()), unix.LOCK_UN)
		lf.Close()
	}, nil
}

// loadLocked rescans the directory into the cache and returns a snapshot.
// Files that do not parse are reported and skipped. f.mu must be held.
func (f *FileStore) loadLocked() (*Snapshot, error) {
	_, errs := f.cache.scanAll(false)
	for _, err := range errs {
		f.report(err)
	}
	rev, err := readRevision(f.dir)
	if err != nil {
		return nil, err
	}
	s := f.cache.snapshot()
	s.Revision = rev
	return s, nil
}

// Snapshot reads the directory (re-parsing only files that changed since
// the last call) and returns the model. Files that do not parse are logged
// and skipped. A commit a crashed writer left half made is finished first.
// It returns an error if the store is closed, the lock cannot be taken, such
// a commit cannot be finished, or the revision file is unreadable.
func (f *FileStore) Snapshot(ctx context.Context) (*Snapshot, error) {
	if f.closed() {
		return nil, ErrClosed
	}
	unlock, err := f.rlock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

// newProblems returns the cross-resource errors of after that before did
// not have. A change is refused for what it breaks, not for problems
// already on disk (from hand edits) that it leaves alone.
func newProblems(before, after *Snapshot, changed map[Ref]bool) error {
	return problemsAfter(before, after, changed)
}

// fileOp is one file of a commit: a write (data != nil) or a delete.
type fileOp struct {
	ref    Ref
	path   string
	data   []byte
	res    Resource
	exists bool

	tmp    string   // the written temporary file; "" for a delete
	tmpSt  fileStat // its stat, which the final file keeps
	backup string   // the previous version, hard-linked aside; "" if none
}

// Apply validates rs (each resource after defaulting, then the resulting
// snapshot) and writes them all or none, also across a crash (see
// FileStore). Resources whose stored form is already identical are not
// rewritten; the revision is bumped when anything was written. It returns
// the validation errors (as *ValidationError), an error for a resource
// given twice, or the I/O error that stopped the commit: after undoing it,
// or, when it could neither be completed nor undone now, saying that the
// next process to open, read or write the store finishes it.
func (f *FileStore) Apply(ctx context.Context, rs []Resource) error {
	if f.closed() {
		return ErrClosed
	}
	prepared, err := prepareApply(rs)
	if err != nil || len(prepared) == 0 {
		return err
	}
	return f.write(ctx, prepared, nil)
}

// prepareApply copies, defaults and validates rs on their own, as every
// store's Apply does first. It returns the validation errors, or an error
// for a nil item.
func prepareApply(rs []Resource) ([]Resource, error) {
	var errs []*ValidationError
	prepared := make([]Resource, 0, len(rs))
	seen := map[Ref]int{}
	for i, r := range rs {
		if r == nil {
			return nil, fmt.Errorf("apply: item %d is nil", i+1)
		}
		c := deepCopy(r)
		ApplyDefaults(c)
		errs = append(errs, validate(c)...)
		ref := RefOf(c)
		if j, dup := seen[ref]; dup {
			errs = append(errs, &ValidationError{Ref: ref, Reason: fmt.Sprintf("given more than once (items %d and %d)", j+1, i+1)})
		}
		seen[ref] = i
		prepared = append(prepared, c)
	}
	if len(errs) > 0 {
		return nil, joinValidation(errs)
	}
	return prepared, nil
}

// applyProblems returns the cross-resource errors that writing prepared
// over before would add.
func applyProblems(before *Snapshot, prepared []Resource) error {
	return problemsOfWrite(before, prepared)
}

// write commits prepared resources under the writers' lock. check, when
// not nil, runs first under the lock (Create's and Update's conditions).
func (f *FileStore) write(ctx context.Context, prepared []Resource, check func() error) error {
	before, done, err := f.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer done()
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	if err := applyProblems(before, prepared); err != nil {
		return err
	}

	var ops []*fileOp
	for _, r := range prepared {
		op, err := f.writeOp(r)
		if err != nil {
			return err
		}
		if op != nil {
			ops = append(ops, op)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if err := f.commit(ops, before.Revision); err != nil {
		f.model = nil // the commit may be finished by another process: read again
		return err
	}
	f.committed(ops)
	return nil
}

// writeOp returns the op that stores r, a prepared resource, or nil when
// its file already holds exactly that. It must run under the writers' lock.
func (f *FileStore) writeOp(r Resource) (*fileOp, error) {
	ref := RefOf(r)
	data, err := marshalCanonical(r)
	if err != nil {
		return nil, err
	}
	path := f.cache.path(ref)
	cur, err := os.ReadFile(path)
	switch {
	case err == nil && string(cur) == string(data):
		return nil, nil // already stored as is; rewriting would only wake watchers
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("reading %s: %w", relPath(ref), err)
	}
	return &fileOp{ref: ref, path: path, data: data, res: r, exists: err == nil}, nil
}

// deleteOp returns the op that removes the stored file of ref.
func (f *FileStore) deleteOp(ref Ref) *fileOp {
	return &fileOp{ref: ref, path: f.cache.path(ref), exists: true}
}

// Delete removes refs all or none, also across a crash (see FileStore).
// Every ref must name a stored file (a file that does not parse can be
// deleted); the resulting snapshot must not gain cross-resource errors. It
// returns errors wrapping ErrNotFound for missing resources, the validation
// errors, or the I/O error that stopped the commit, as Apply does.
func (f *FileStore) Delete(ctx context.Context, refs []Ref) error { return f.delete(ctx, refs, nil) }

// delete is Delete, with check (when set) run under the store's lock
// before anything is deleted: its error refuses the delete.
func (f *FileStore) delete(ctx context.Context, refs []Ref, check func() error) error {
	if f.closed() {
		return ErrClosed
	}
	norm, err := normalizeRefs(refs)
	if err != nil || len(norm) == 0 {
		return err
	}

	before, done, err := f.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer done()
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	after := before.Clone()
	var ops []*fileOp
	var errs []error
	seen := map[Ref]bool{}
	for _, ref := range norm {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		if !f.cache.exists(ref) {
			errs = append(errs, fmt.Errorf("%s: %w", ref, ErrNotFound))
			continue
		}
		after.Remove(ref)
		ops = append(ops, f.deleteOp(ref))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := newProblems(before, after, nil); err != nil {
		return err
	}
	if err := f.commit(ops, before.Revision); err != nil {
		f.model = nil // the commit may be finished by another process: read again
		return err
	}
	f.committed(ops)
	return nil
}

// normalizeRefs gives each ref its canonical kind, as every store's Delete
// does first. A ref to an unknown kind is an error; one whose name no
// resource can have is not found.
func normalizeRefs(refs []Ref) ([]Ref, error) {
	var errs []error
	norm := make([]Ref, 0, len(refs))
	for _, ref := range refs {
		k, err := ParseKind(ref.Kind)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ref, err))
			continue
		}
		ref.Kind = k
		if !validName(ref.Name) {
			errs = append(errs, fmt.Errorf("%s: %w", ref, ErrNotFound))
			continue
		}
		norm = append(norm, ref)
	}
	return norm, errors.Join(errs...)
}

// commit makes ops visible all or none, then bumps the revision, through
// the intent log (fileintent.go), so that a crash at any point leaves the
// store as before or, once the intent is written, to be finished as after.
//
// Every new version is written to a temporary file and the old versions are
// hard-linked aside (so that the final path always exists for a write: a
// watcher never sees a replaced resource vanish; and so that undoing is a
// rename), all made durable before the intent that names them. Until the
// intent is written, an error removes them and changes nothing.
func (f *FileStore) commit(ops []*fileOp, rev uint64) (err error) {
	in := &intent{forward: true, revision: rev + 1, ops: ops}
	written := false // the intent is on disk: finish owns the side files
	defer func() {
		if err == nil || written || errors.Is(err, errCrashed) {
			return
		}
		for _, op := range ops {
			for _, p := range []string{op.tmp, op.backup} {
				if p != "" {
					os.Remove(p)
				}
			}
		}
	}()

	batch := haveSyncfs && len(ops) > syncfsThreshold
	for _, op := range ops {
		if op.data == nil {
			continue
		}
		if f.crash("write " + relPath(op.ref)) {
			return errCrashed
		}
		if op.tmp, op.tmpSt, err = writeTemp(op.path, op.data, !batch); err != nil {
			return fmt.Errorf("writing %s: %w", relPath(op.ref), err)
		}
	}
	if batch {
		if f.crash("syncfs") {
			return errCrashed
		}
		if err := syncFilesystem(f.dir); err != nil {
			return fmt.Errorf("syncing datastore: %w", err)
		}
	}
	for _, op := range ops {
		if !op.exists {
			continue
		}
		if f.crash("back up " + relPath(op.ref)) {
			return errCrashed
		}
		backup := sideName(op.path, "bak")
		if err := os.Link(op.path, backup); err != nil {
			return fmt.Errorf("backing up %s: %w", relPath(op.ref), err)
		}
		op.backup = backup
	}
	if err := f.syncDirs(ops); err != nil {
		return err
	}
	if f.crash("write intent") {
		return errCrashed
	}
	if err := f.writeIntent(in); err != nil {
		if errors.Is(err, errCrashed) {
			return err
		}
		// Whether or not it got there, no file was touched yet.
		if rerr := f.removeIntent(); rerr != nil {
			written = true
			return fmt.Errorf("%w; removing it failed too (%v), and the commit is finished when the store is next opened, read or written", err, rerr)
		}
		return err
	}
	written = true
	return f.finish(in)
}

// writeTemp writes data to a temporary dotfile next to path and returns its
// name and stat.
func writeTemp(path string, data []byte, sync bool) (string, fileStat, error) {
	tf, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fileStat{}, err
	}
	name := tf.Name()
	fail := func(err error) (string, fileStat, error) {
		tf.Close()
		os.Remove(name)
		return "", fileStat{}, err
	}
	// CreateTemp makes the file 0600; resources are not secret, and
	// calyxctl run by other users reads them.
	if err := tf.Chmod(0o644); err != nil {
		return fail(err)
	}
	if _, err := tf.Write(data); err != nil {
		return fail(err)
	}
	if sync {
		if err := tf.Sync(); err != nil {
			return fail(err)
		}
	}
	fi, err := tf.Stat()
	if err != nil {
		return fail(err)
	}
	if err := tf.Close(); err != nil {
		os.Remove(name)
		return "", fileStat{}, err
	}
	return name, statOf(fi), nil
}

// sideName returns a fresh dotfile name next to path for a backup.
func sideName(path, what string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+"."+what+"-"+hex.EncodeToString(b[:]))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// removeStale deletes temporaries and backups left by a writer that died
// before its intent was written or after it was removed. It runs under the
// exclusive lock, when no intent is pending (see recoverLocked).
func (f *FileStore) removeStale() {
	dirs := []string{f.dir}
	for _, k := range kindOrder {
		dirs = append(dirs, filepath.Join(f.dir, kindDir(k)))
	}
	for _, d := range dirs {
		des, _ := os.ReadDir(d)
		for _, de := range des {
			n := de.Name()
			if strings.HasPrefix(n, ".") && (strings.Contains(n, ".tmp-") || strings.Contains(n, ".bak-")) {
				os.Remove(filepath.Join(d, n))
			}
		}
	}
}

// readRevision returns the revision counter; 0 when the store has never
// been written.
func readRevision(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, revisionFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading revision: %w", err)
	}
	rev, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading revision: %s holds %q, not a number", filepath.Join(dir, revisionFile), strings.TrimSpace(string(b)))
	}
	return rev, nil
}

// setRevision makes rev the store's revision. Setting it to what it is
// writes nothing, so that finishing a commit twice changes it once.
func (f *FileStore) setRevision(rev uint64) error {
	if cur, err := readRevision(f.dir); err == nil && cur == rev {
		return nil
	}
	return f.replaceFile(filepath.Join(f.dir, revisionFile), []byte(strconv.FormatUint(rev, 10)+"\n"))
}

// replaceFile puts data at path durably and whole: through a fsynced
// temporary renamed over it, then a fsync of the directory.
func (f *FileStore) replaceFile(path string, data []byte) error {
	tmp, _, err := writeTemp(path, data, true)
	if err != nil {
		return err
	}
	if f.crash("rename " + filepath.Base(path)) {
		return errCrashed
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// beginWrite takes the writers' lock (other processes) and the store's own
// mutex, finishes the commit a crashed writer left and clears its files,
// and returns the current model. done releases both; it is nil when err is
// not.
func (f *FileStore) beginWrite(ctx context.Context) (before *Snapshot, done func(), err error) {
	unlock, err := f.lock(ctx, unix.LOCK_EX)
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	done = func() {
		f.mu.Unlock()
		unlock()
	}
	if err := f.recoverLocked(); err != nil {
		done()
		return nil, nil, err
	}
	f.staleSwept.Store(true)
	if before, err = f.freshLocked(); err != nil {
		done()
		return nil, nil, err
	}
	return before, done, nil
}

// freshLocked is loadLocked for a writer: after its first write it re-reads
// only the files the freshness watch names, not every file of the store.
// Without inotify (or after lost events) it scans everything. It must run
// under the writers' lock and f.mu.
func (f *FileStore) freshLocked() (*Snapshot, error) {
	if f.fresh != nil && f.model != nil {
		refs, all, err := f.fresh.changes()
		if err == nil && !all {
			for ref := range refs {
				// Read whatever the stat says: an event is better
				// evidence than a coarse mtime (an edit in place of the
				// same size within one tick).
				if _, err := f.cache.refresh(ref, true); err != nil {
					f.report(err)
				}
				// Compared with the model, not the cache: a Snapshot
				// call may have read the change into the cache already.
				res := f.cache.entries[ref.Kind][ref.Name].res
				if cur, _ := f.model.Get(ref); cur != res {
					f.model.setOwned(ref, res)
				}
			}
			rev, err := readRevision(f.dir)
			if err != nil {
				return nil, err
			}
			f.model.Revision = rev
			return f.model, nil
		}
		f.fresh.close()
		f.fresh = nil
	}
	f.model = nil
	// The watch goes in before the scan, so no change falls between.
	fr, err := newFreshness(f.dir)
	if err != nil {
		f.opts.logger.Debug("datastore: every write scans the store", "dir", f.dir, "err", err)
	}
	f.fresh = fr
	s, err := f.loadLocked()
	if err != nil {
		return nil, err
	}
	if fr != nil {
		f.model = s
	}
	return s, nil
}

// committed brings the writer's model in step with ops, just committed.
func (f *FileStore) committed(ops []*fileOp) {
	for _, op := range ops {
		if op.data != nil {
			f.cache.entries[op.ref.Kind][op.ref.Name] = cacheEntry{stat: op.tmpSt, res: op.res}
		} else {
			delete(f.cache.entries[op.ref.Kind], op.ref.Name)
		}
		if f.model != nil {
			f.model.setOwned(op.ref, op.res)
		}
	}
}
