package model

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Watch sends the current snapshot, then a new one after each change to the
// directory, whoever made it (this process, another calyxctl, an editor).
// Changes are coalesced: a snapshot goes out once no event has arrived for
// the debounce interval (2ms by default) or a burst has lasted 100ms (five
// times the debounce when one is set). Only the files named by events are
// read again, so the cost of a change does not grow with the size of the model. A file that does not
// parse is logged and skipped, keeping its previous version. The channel
// holds at most one snapshot: a slow reader gets the latest one, never a
// backlog. A snapshot sent must not be changed (Clone it): the next one is
// made from it. It is closed when ctx ends or the store is closed. Watch returns
// an error if the store is closed or inotify cannot be set up.
func (f *FileStore) Watch(ctx context.Context) (<-chan *Snapshot, error) {
	if f.closed() {
		return nil, ErrClosed
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching datastore: %w", err)
	}
	// Watches go in before the initial read so no change falls between.
	for _, d := range f.watchDirs() {
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("watching %s: %w", d, err)
		}
	}
	unlock, err := f.rlock(ctx)
	if err != nil {
		w.Close()
		return nil, err
	}
	f.mu.Lock()
	initial, err := f.loadLocked()
	cache := f.cache.clone()
	f.mu.Unlock()
	unlock()
	if err != nil {
		w.Close()
		return nil, err
	}
	out := make(chan *Snapshot, 1)
	out <- initial
	wt := &watch{f: f, w: w, cache: cache, out: out, rev: initial.Revision, last: initial}
	f.watches.Add(1)
	go func() {
		defer f.watches.Done()
		wt.run(ctx)
	}()
	return out, nil
}

func (f *FileStore) watchDirs() []string {
	dirs := []string{f.dir}
	for _, k := range kindOrder {
		dirs = append(dirs, filepath.Join(f.dir, kindDir(k)))
	}
	return dirs
}

type watch struct {
	f     *FileStore
	w     *fsnotify.Watcher
	cache *fileCache
	out   chan *Snapshot
	rev   uint64

	last     *Snapshot // the last one sent; snapshots are not changed once made
	pending  map[Ref]bool
	rescan   map[string]bool // kinds to rescan whole
	revDirty bool
	lockFile *os.File
}

func (wt *watch) run(ctx context.Context) {
	defer close(wt.out)
	defer wt.w.Close()
	defer func() {
		if wt.lockFile != nil {
			wt.lockFile.Close()
		}
	}()
	wt.pending = map[Ref]bool{}
	wt.rescan = map[string]bool{}
	o := wt.f.opts

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var burstStart time.Time
	armed := false
	arm := func() {
		now := time.Now()
		if !armed {
			armed = true
			burstStart = now
		}
		// Past maxDelay the timer is left to fire as set, so a steady
		// stream of events cannot hold snapshots back for ever.
		if now.Sub(burstStart) < o.maxDelay {
			timer.Reset(o.debounce)
		}
	}

	for {
		select {
		case <-ctx.Done():
			return
		case <-wt.f.done:
			return
		case ev, ok := <-wt.w.Events:
			if !ok {
				return
			}
			if wt.note(ev) {
				arm()
			}
		case err, ok := <-wt.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost: only a full rescan can tell what changed.
				for _, k := range kindOrder {
					wt.rescan[k] = true
				}
				wt.revDirty = true
				arm()
				continue
			}
			wt.f.report(fmt.Errorf("watching datastore: %w", err))
		case <-timer.C:
			// Files are read under the readers' lock, so that a commit is
			// seen whole. While a writer holds the lock, events are taken
			// in and the lock tried again later; after a long wait, or to
			// finish a commit a crashed writer left, the lock is waited for.
			unlock, busy := wt.tryReadLock()
			if unlock == nil {
				if busy && time.Since(burstStart) < 20*o.maxDelay {
					timer.Reset(o.debounce)
					continue
				}
				var err error
				if unlock, err = wt.f.rlock(ctx); err != nil {
					if ctx.Err() != nil || errors.Is(err, ErrClosed) {
						return
					}
					wt.f.report(fmt.Errorf("watching datastore: %w", err))
					timer.Reset(10 * o.maxDelay) // not a report per debounce
					continue
				}
			}
			if wt.eventsBehind() && time.Since(burstStart) < 20*o.maxDelay {
				unlock()
				timer.Reset(o.debounce)
				continue
			}
			armed = false
			s := wt.process()
			unlock()
			if s != nil {
				wt.send(s)
			}
		}
	}
}

// note records what an event invalidates and reports whether it matters.
func (wt *watch) note(ev fsnotify.Event) bool {
	dir, base := filepath.Dir(ev.Name), filepath.Base(ev.Name)
	if dir == wt.f.dir {
		if base == revisionFile {
			wt.revDirty = true
			return true
		}
		if kind, ok := kindOfDir(base); ok {
			// A kind directory was removed or replaced: watch the new one
			// and reread it whole.
			if ev.Has(fsnotify.Create) {
				if err := wt.w.Add(ev.Name); err != nil {
					wt.f.report(fmt.Errorf("watching %s: %w", ev.Name, err))
				}
			}
			wt.rescan[kind] = true
			return true
		}
		return false
	}
	if filepath.Dir(dir) != wt.f.dir {
		return false
	}
	kind, ok := kindOfDir(filepath.Base(dir))
	if !ok {
		return false
	}
	name, ok := resourceFile(base)
	if !ok {
		return false
	}
	wt.pending[Ref{kind, name}] = true
	return true
}

// tryReadLock takes the readers' lock without waiting and returns its
// release. It returns nil and busy when a writer holds the lock, nil alone
// when an intent a crashed writer left must be finished first (rlock does).
// A store never written has no lock file and needs no lock.
func (wt *watch) tryReadLock() (unlock func(), busy bool) {
	if wt.lockFile == nil {
		lf, err := os.Open(filepath.Join(wt.f.dir, lockFile))
		if err != nil {
			return func() {}, false
		}
		wt.lockFile = lf
	}
	fd := int(wt.lockFile.Fd())
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return nil, errors.Is(err, unix.EWOULDBLOCK)
	}
	unlock = func() { _ = unix.Flock(fd, unix.LOCK_UN) }
	if wt.f.pending() {
		unlock()
		return nil, false
	}
	return unlock, false
}

// eventsBehind reports whether a commit has been made (the revision on
// disk moved) whose events have not all been taken in yet: its last one,
// the revision file's, has not. A snapshot made now would miss some of its
// files, e.g. those of a commit the watch itself just finished for a
// crashed writer. It is called under the readers' lock.
func (wt *watch) eventsBehind() bool {
	rev, err := readRevision(wt.f.dir)
	return err == nil && rev != wt.rev && !wt.revDirty
}

// process applies what the events invalidated and returns the new snapshot,
// or nil when nothing visible changed.
func (wt *watch) process() *Snapshot {
	changed := false
	for kind := range wt.rescan {
		ch, errs := wt.cache.scanKind(kind, false)
		changed = changed || ch
		for _, err := range errs {
			wt.f.report(err)
		}
		for ref := range wt.pending {
			if ref.Kind == kind {
				delete(wt.pending, ref)
			}
		}
	}
	rescanned := len(wt.rescan) > 0
	clear(wt.rescan)
	var edits []Ref
	for ref := range wt.pending {
		ch, err := wt.cache.refresh(ref, true)
		if ch {
			changed = true
			edits = append(edits, ref)
		}
		if err != nil {
			wt.f.report(err)
		}
	}
	clear(wt.pending)
	if wt.revDirty {
		wt.revDirty = false
		rev, err := readRevision(wt.f.dir)
		if err != nil {
			wt.f.report(err)
		} else if rev != wt.rev {
			wt.rev = rev
			changed = true
		}
	}
	if !changed {
		return nil
	}
	var s *Snapshot
	if wt.last != nil && !rescanned {
		// A few files changed: the last snapshot with them, which costs
		// a copy of its maps, not a Put per resource.
		s = wt.last.Clone()
		for _, ref := range edits {
			if e := wt.cache.entries[ref.Kind][ref.Name]; e.res != nil {
				s.Put(e.res)
			} else {
				s.Remove(ref)
			}
		}
	} else {
		s = wt.cache.snapshot()
	}
	s.Revision = wt.rev
	wt.last = s
	return s
}

// send replaces any snapshot the reader has not taken yet; only this
// goroutine sends, so after draining there is room.
func (wt *watch) send(s *Snapshot) {
	select {
	case wt.out <- s:
	default:
		select {
		case <-wt.out:
		default:
		}
		wt.out <- s
	}
}
