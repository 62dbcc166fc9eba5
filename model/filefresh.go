package model

import (
	"errors"
	"fmt"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// freshness tells a writer which resource files changed since it last
// looked, so that a write re-reads those instead of stat'ing every file of
// the store (at 20,000 files the scan cost more than the write). It is an
// inotify instance on the store's directories, drained to EAGAIN under the
// writers' lock: the kernel queues an event before the call that caused it
// returns, so every change finished before the lock was taken is in the
// queue. A lost event (queue overflow) or a kind directory replaced makes
// the caller scan everything, as before.
type freshness struct {
	fd    int
	kinds map[int32]string // watch descriptor → kind; the root maps to ""
	buf   []byte
}

// freshEvents are the changes a resource file can go through: written in
// place, created, replaced or removed by rename, deleted, chmod'ed.
const freshEvents = unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CREATE |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// newFreshness watches dir and its kind directories. It returns an error
// when inotify cannot be set up (e.g. the per-user instance limit); the
// caller then scans on every write.
func newFreshness(dir string) (*freshness, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	fr := &freshness{fd: fd, kinds: map[int32]string{}, buf: make([]byte, 64<<10)}
	add := func(path, kind string, mask uint32) error {
		wd, err := unix.InotifyAddWatch(fd, path, mask)
		if err != nil {
			fr.close()
			return fmt.Errorf("inotify watch %s: %w", path, err)
		}
		fr.kinds[int32(wd)] = kind
		return nil
	}
	// The root only matters for kind directories coming and going.
	if err := add(dir, "", unix.IN_CREATE|unix.IN_DELETE|unix.IN_MOVED_FROM|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		return nil, err
	}
	for _, k := range kindOrder {
		if err := add(filepath.Join(dir, kindDir(k)), k, freshEvents|unix.IN_ONLYDIR); err != nil {
			return nil, err
		}
	}
	return fr, nil
}

// changes drains the queue and returns the resource files named by its
// events, or all=true when they cannot say (overflow, a kind directory
// created, removed or replaced: the watches no longer cover the store and
// the caller must make a new freshness).
func (fr *freshness) changes() (refs map[Ref]bool, all bool, err error) {
	refs = map[Ref]bool{}
	for {
		n, err := unix.Read(fr.fd, fr.buf)
		if errors.Is(err, unix.EAGAIN) {
			return refs, all, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, true, fmt.Errorf("reading inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&fr.buf[off]))
			nameBytes := fr.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			kind, known := fr.kinds[ev.Wd]
			base := cString(nameBytes)
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0,
				ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0:
				all = true
			case !known:
			case kind == "":
				// In the root only a kind directory coming or going
				// matters (not the lock, revision or intent files).
				if _, isKind := kindOfDir(base); isKind {
					all = true
				}
			default:
				if name, ok := resourceFile(base); ok {
					refs[Ref{kind, name}] = true
				}
			}
		}
	}
}

// cString is the NUL-padded name of an inotify event.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func (fr *freshness) close() { unix.Close(fr.fd) }
