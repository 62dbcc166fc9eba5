package model

// The file store's intent log, which makes a multi-file commit atomic
// across a crash of the process that writes it (and, since everything it
// names is fsynced first, across a power loss on a filesystem that honours
// fsync).
//
// A commit first writes every new version to a temporary file next to its
// final path and makes it durable, hard-links every old version aside (its
// backup), and fsyncs the directories so that both are durable names. Then
// it writes the intent, <dir>/.intent: the commit's revision and, for every
// file, its temporary (or "delete") and its backup (or none for a file the
// commit creates), ending with a sha256 of all that. The intent is written
// to a temporary, fsynced, renamed into place and its directory fsynced, so
// it is either whole or absent. Writing it is the commit point:
//
//   - No intent, or a torn one (its checksum line missing or wrong): nothing
//     of the commit has been made visible. Its temporaries and backups are
//     garbage, removed like those of a writer that died before committing.
//   - "roll forward": the commit happens. Every temporary still there is
//     renamed over its file (one already renamed is gone, so a second pass
//     skips it), every file the commit deletes is removed (if still there),
//     the directories are fsynced and the revision is set to the intent's
//     (set, not incremented, so it changes once however often this runs).
//   - "roll back": a rename failed while rolling forward, and the intent was
//     turned around (rewritten the same way) before anything was undone.
//     Every backup still there is renamed back over its file and every file
//     the commit created is removed; the revision is left as it was.
//
// Then the intent is removed (and its directory fsynced), and only then the
// temporaries and backups. Both directions are idempotent, so a process
// that dies while finishing an intent, its own or another's, leaves it for
// the next to finish again.
//
// An intent is finished under the writers' lock by whoever meets it first:
// OpenFile when the lock is free, every writer before it reads the model
// (beginWrite), and every reader (rlock, the watch) before it reads, so no
// reader ever sees a commit half made. The lock also keeps a second intent
// from being written before the first is finished.

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// intentFile is the intent log's name in the store directory; the
// directory scan reads only the kind directories, so it is never taken for
// a resource.
const intentFile = ".intent"

const intentHeader = "calyx-intent 1"

// errCrashed is what a commit returns when the test hook (options.crashAt)
// made it stop as if the process had died there: nothing is cleaned up.
var errCrashed = errors.New("stopped by the crash test hook")

// intent is a commit's plan as the intent log holds it.
type intent struct {
	forward  bool   // roll forward; false: roll back
	revision uint64 // the store's revision once the commit is made
	// ops are the commit's files. Only ref, path, tmp (the new version;
	// "" for a delete) and backup (the old version; "" for a file the
	// commit creates) are recorded.
	ops []*fileOp
}

// crash reports whether the test hook wants the store to stop before step,
// as if the process died there. It is always false outside tests.
func (f *FileStore) crash(step string) bool {
	return f.opts.crashAt != nil && f.opts.crashAt(step)
}

func (f *FileStore) intentPath() string { return filepath.Join(f.dir, intentFile) }

// encode returns the intent's file content: one line per fact, the files by
// kind, name and side-file names (which live next to the file), then the
// checksum of everything before it.
func (in *intent) encode() []byte {
	var b strings.Builder
	b.WriteString(intentHeader + "\n")
	if in.forward {
		b.WriteString("roll forward\n")
	} else {
		b.WriteString("roll back\n")
	}
	fmt.Fprintf(&b, "revision %d\n", in.revision)
	side := func(p string) string {
		if p == "" {
			return "-"
		}
		return filepath.Base(p)
	}
	for _, op := range in.ops {
		what := "write"
		if op.tmp == "" {
			what = "delete"
		}
		fmt.Fprintf(&b, "%s %s %s %s %s\n", what, op.ref.Kind, op.ref.Name, side(op.tmp), side(op.backup))
	}
	fmt.Fprintf(&b, "sha256 %x\n", sha256.Sum256([]byte(b.String())))
	return []byte(b.String())
}

// errTornIntent marks an intent file that was not written whole.
var errTornIntent = errors.New("torn (its checksum does not match)")

// parseIntent decodes an intent file. It returns errTornIntent when the
// checksum is missing or wrong, and an error naming the line when a whole
// intent says something this store never writes (it is then left alone:
// finishing it could do harm).
func (f *FileStore) parseIntent(data []byte) (*intent, error) {
	s := string(data)
	if !strings.HasSuffix(s, "\n") {
		return nil, errTornIntent
	}
	i := strings.LastIndexByte(s[:len(s)-1], '\n')
	body, last := s[:i+1], s[i+1:len(s)-1]
	if last != fmt.Sprintf("sha256 %x", sha256.Sum256([]byte(body))) {
		return nil, errTornIntent
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	bad := func(n int, why string) error {
		return fmt.Errorf("%s line %d: %s", f.intentPath(), n+1, why)
	}
	if len(lines) < 4 || lines[0] != intentHeader {
		return nil, bad(0, fmt.Sprintf("want %q and at least one file", intentHeader))
	}
	in := &intent{}
	switch lines[1] {
	case "roll forward":
		in.forward = true
	case "roll back":
	default:
		return nil, bad(1, `want "roll forward" or "roll back"`)
	}
	rev, ok := strings.CutPrefix(lines[2], "revision ")
	if in.revision, _ = strconv.ParseUint(rev, 10, 64); !ok || in.revision == 0 {
		return nil, bad(2, "want revision and a number above 0")
	}
	for n := 3; n < len(lines); n++ {
		fields := strings.Split(lines[n], " ")
		if len(fields) != 5 {
			return nil, bad(n, "want write|delete KIND NAME TMP|- BACKUP|-")
		}
		ref := Ref{Kind: fields[1], Name: fields[2]}
		if !slices.Contains(kindOrder, ref.Kind) || !validName(ref.Name) {
			return nil, bad(n, fmt.Sprintf("%s is not a resource", ref))
		}
		op := &fileOp{ref: ref, path: f.cache.path(ref)}
		// Side files are dotfiles next to the file, named after it; any
		// other name would let a bad intent touch files it does not own.
		side := func(name, what string) (string, error) {
			if name == "-" {
				return "", nil
			}
			if !strings.HasPrefix(name, "."+filepath.Base(op.path)+"."+what+"-") || strings.ContainsRune(name, '/') {
				return "", bad(n, fmt.Sprintf("%q is not a %s file of %s", name, what, relPath(ref)))
			}
			return filepath.Join(filepath.Dir(op.path), name), nil
		}
		var err error
		if op.tmp, err = side(fields[3], "tmp"); err != nil {
			return nil, err
		}
		if op.backup, err = side(fields[4], "bak"); err != nil {
			return nil, err
		}
		switch {
		case fields[0] == "write" && op.tmp != "":
		case fields[0] == "delete" && op.tmp == "" && op.backup != "":
		default:
			return nil, bad(n, "a write needs its temporary file, a delete its backup and no temporary")
		}
		in.ops = append(in.ops, op)
	}
	return in, nil
}

// readIntent returns the intent a writer left, or nil when there is none.
// A torn intent is reported and removed: nothing it names was visible yet.
func (f *FileStore) readIntent() (*intent, error) {
	data, err := os.ReadFile(f.intentPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.intentPath(), err)
	}
	in, err := f.parseIntent(data)
	if errors.Is(err, errTornIntent) {
		f.opts.logger.Warn("datastore: discarding an intent log a writer did not finish writing; its commit had not started", "path", f.intentPath())
		if err := f.removeIntent(); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return in, err
}

// writeIntent makes in the store's intent, durably and whole.
func (f *FileStore) writeIntent(in *intent) error {
	if err := f.replaceFile(f.intentPath(), in.encode()); err != nil {
		return fmt.Errorf("writing %s: %w", f.intentPath(), err)
	}
	return nil
}

func (f *FileStore) removeIntent() error {
	if err := os.Remove(f.intentPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", f.intentPath(), err)
	}
	if err := syncDir(f.dir); err != nil {
		return fmt.Errorf("syncing %s: %w", f.dir, err)
	}
	return nil
}

// pending reports whether an intent is waiting to be finished.
func (f *FileStore) pending() bool {
	_, err := os.Lstat(f.intentPath())
	return err == nil
}

// finish carries out a durable intent in its direction (see the top of
// this file), then removes it and the commit's side files. A rename or
// removal that fails while rolling forward turns the intent around. Its
// errors say whether the commit was made, undone, or is left to the next
// writer or reader to finish.
func (f *FileStore) finish(in *intent) error {
	if in.forward {
		for _, op := range in.ops {
			if err := f.rollForward(op); err != nil {
				if errors.Is(err, errCrashed) {
					return err
				}
				return f.turnBack(in, op, err)
			}
		}
	} else {
		for _, op := range slices.Backward(in.ops) {
			if err := f.rollBack(op); err != nil {
				return err
			}
		}
	}
	if err := f.syncDirs(in.ops); err != nil {
		return f.unfinished(err)
	}
	if in.forward {
		if f.crash("revision") {
			return errCrashed
		}
		if err := f.setRevision(in.revision); err != nil {
			return f.unfinished(fmt.Errorf("the revision could not be updated: %w", err))
		}
	}
	if f.crash("remove intent") {
		return errCrashed
	}
	if err := f.removeIntent(); err != nil {
		return f.unfinished(err)
	}
	for _, op := range in.ops {
		if f.crash("remove side files of " + relPath(op.ref)) {
			return errCrashed
		}
		for _, p := range []string{op.tmp, op.backup} {
			if p != "" {
				os.Remove(p) // a leftover is removed by the next writer (removeStale)
			}
		}
	}
	return nil
}

// unfinished is the error of a commit whose files are in their final
// state but whose intent could not be completed.
func (f *FileStore) unfinished(err error) error {
	if errors.Is(err, errCrashed) {
		return err
	}
	return fmt.Errorf("the commit is made but not finished, and is finished when the store is next opened, read or written: %w", err)
}

// rollForward makes one file of a commit its new version, or removes it.
// Done before, it does nothing.
func (f *FileStore) rollForward(op *fileOp) error {
	var err error
	if op.tmp != "" {
		if f.crash("rename " + relPath(op.ref)) {
			return errCrashed
		}
		err = f.rename(op.tmp, op.path)
	} else {
		if f.crash("remove " + relPath(op.ref)) {
			return errCrashed
		}
		err = os.Remove(op.path)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// rollBack puts one file of a commit back to its old version, or removes
// it if the commit created it. Done before, it does nothing.
func (f *FileStore) rollBack(op *fileOp) error {
	if f.crash("restore " + relPath(op.ref)) {
		return errCrashed
	}
	var err error
	if op.backup != "" {
		// Renaming a link over another link of the same file does nothing
		// and keeps both; the backup is then removed with the side files.
		err = os.Rename(op.backup, op.path)
	} else if _, err = os.Lstat(op.tmp); errors.Is(err, fs.ErrNotExist) {
		// The temporary was renamed: the file is the commit's.
		err = os.Remove(op.path)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restoring %s: %w", relPath(op.ref), err)
	}
	return nil
}

// turnBack undoes a commit whose op failed to roll forward with cause:
// the intent is rewritten as "roll back" before anything is undone, so that
// a crash while undoing is finished in the same direction.
func (f *FileStore) turnBack(in *intent, op *fileOp, cause error) error {
	if f.crash("turn back") {
		return errCrashed
	}
	in.forward = false
	if err := f.writeIntent(in); err != nil {
		if errors.Is(err, errCrashed) {
			return err
		}
		return fmt.Errorf("committing %s: %w; it could not be undone (%v), and is finished when the store is next opened, read or written", relPath(op.ref), cause, err)
	}
	if err := f.finish(in); err != nil {
		if errors.Is(err, errCrashed) {
			return err
		}
		return fmt.Errorf("committing %s: %w; undoing it failed too, and is retried when the store is next opened, read or written: %v", relPath(op.ref), cause, err)
	}
	return fmt.Errorf("committing %s: %w (nothing was changed)", relPath(op.ref), cause)
}

// syncDirs fsyncs the directories of ops, in a fixed order.
func (f *FileStore) syncDirs(ops []*fileOp) error {
	var dirs []string
	for _, op := range ops {
		dirs = append(dirs, filepath.Dir(op.path))
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if f.crash("sync " + filepath.Base(d)) {
			return errCrashed
		}
		if err := syncDir(d); err != nil {
			return fmt.Errorf("syncing %s: %w", d, err)
		}
	}
	return nil
}

// recoverLocked finishes the intent a writer left, if any, then removes
// leftover temporaries and backups. The writers' lock must be held.
func (f *FileStore) recoverLocked() error {
	in, err := f.readIntent()
	if err != nil {
		return fmt.Errorf("finishing an interrupted commit: %w", err)
	}
	if in != nil {
		if err := f.finish(in); err != nil {
			if errors.Is(err, errCrashed) {
				return err
			}
			return fmt.Errorf("finishing an interrupted commit in %s: %w", f.dir, err)
		}
	}
	if in != nil || !f.staleSwept.Load() {
		// Temporaries of writers that died are swept when an intent
		// shows one did, at open and at this store's first write; not on
		// every write: reading every directory each time would cost as
		// much as the write itself at scale.
		f.removeStale()
	}
	return nil
}

// recoverIfFree runs recoverLocked when the writers' lock is free, or
// becomes free within recoverWait (a reader's or a short write's hold).
// When it does not, its holder finishes any intent: a writer does before
// reading, and a reader finds it and does (rlock); what a writer that died
// before writing its intent left is swept by the next open or first write.
// It returns an error only when an intent is pending and cannot be
// finished.
func (f *FileStore) recoverIfFree() error {
	lf, err := openLock(f.dir, unix.LOCK_EX)
	if err != nil {
		if f.pending() {
			return fmt.Errorf("finishing an interrupted commit in %s: %w", f.dir, err)
		}
		return nil // a read-only store: a reader can still read it
	}
	defer lf.Close()
	for deadline := time.Now().Add(recoverWait); ; {
		err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f.recoverLocked()
}

// recoverWait is how long an open waits for the writers' lock to recover
// and sweep: enough for a watch's read, not for a long apply.
const recoverWait = time.Second

// rlock takes the readers' lock on a store with no commit half made: an
// intent left by a writer that died is finished first, under the writers'
// lock. It returns the lock's or the recovery's error.
func (f *FileStore) rlock(ctx context.Context) (func(), error) {
	for {
		unlock, err := f.lock(ctx, unix.LOCK_SH)
		if err != nil {
			return nil, err
		}
		if !f.pending() {
			return unlock, nil
		}
		unlock()
		if err := f.recover(ctx); err != nil {
			return nil, err
		}
	}
}

// recover takes the writers' lock and runs recoverLocked.
func (f *FileStore) recover(ctx context.Context) error {
	unlock, err := f.lock(ctx, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	return f.recoverLocked()
}
