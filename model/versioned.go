package model

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

var (
	_ Versioned = (*FileStore)(nil)
	_ Liveness  = (*FileStore)(nil)
)

// normalizeRef gives ref its canonical kind. A ref to an unknown kind is an
// error; one whose name no resource can have is not found.
func normalizeRef(ref Ref) (Ref, error) {
	norm, err := normalizeRefs([]Ref{ref})
	if err != nil {
		return Ref{}, err
	}
	return norm[0], nil
}

// prepareOne copies, defaults and validates r for Create or Update.
func prepareOne(r Resource) (Resource, error) {
	if r == nil {
		return nil, errors.New("resource is nil")
	}
	prepared, err := prepareApply([]Resource{r})
	if err != nil {
		return nil, err
	}
	return prepared[0], nil
}

// contentRevision is the file store's revision of a resource: a hash of
// its file, so it changes whenever the file does. Going back to an earlier
// content gives back the earlier number, which is what a compare-and-swap
// on the content needs.
func contentRevision(data []byte) int64 {
	sum := sha256.Sum256(data)
	rev := int64(binary.BigEndian.Uint64(sum[:8]) &^ (1 << 63))
	if rev == 0 {
		rev = 1
	}
	return rev
}

// readResource reads and parses the file of ref and returns it with its
// revision. It must be called under the store's lock.
func (f *FileStore) readResource(ref Ref) (Resource, int64, error) {
	data, err := os.ReadFile(f.cache.path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", relPath(ref), err)
	}
	f.parses.Add(1)
	r, err := parseFile(data, ref)
	if err != nil {
		return nil, 0, err
	}
	return r, contentRevision(data), nil
}

// Get returns the resource ref names and its revision, a hash of its file.
// A commit a crashed writer left half made is finished first. It returns
// an error wrapping ErrNotFound when there is no such file, the parse error
// when the file does not parse, ErrClosed after Close, or the error of
// finishing such a commit.
func (f *FileStore) Get(ctx context.Context, ref Ref) (Resource, int64, error) {
	if f.closed() {
		return nil, 0, ErrClosed
	}
	ref, err := normalizeRef(ref)
	if err != nil {
		return nil, 0, err
	}
	unlock, err := f.rlock(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer unlock()
	return f.readResource(ref)
}

// Create writes r only if no file exists for its kind and name (parsed or
// not); otherwise it returns an error wrapping ErrExists. Otherwise it
// behaves as Apply of r alone.
func (f *FileStore) Create(ctx context.Context, r Resource) error {
	if f.closed() {
		return ErrClosed
	}
	c, err := prepareOne(r)
	if err != nil {
		return err
	}
	ref := RefOf(c)
	return f.write(ctx, []Resource{c}, func() error {
		if f.cache.exists(ref) {
			return fmt.Errorf("%s: %w", ref, ErrExists)
		}
		return nil
	})
}

// Update replaces r only if its file's revision (as Get returns it) is
// rev; otherwise it returns an error wrapping ErrConflict, and ErrNotFound
// too when the file is gone. Otherwise it behaves as Apply of r alone.
func (f *FileStore) Update(ctx context.Context, r Resource, rev int64) error {
	if f.closed() {
		return ErrClosed
	}
	c, err := prepareOne(r)
	if err != nil {
		return err
	}
	ref := RefOf(c)
	return f.write(ctx, []Resource{c}, func() error { return f.atRevision(ref, rev) })
}

// atRevision says (nil) whether ref's file, read under the store's lock,
// is at revision rev; otherwise its error wraps ErrConflict, and
// ErrNotFound too when the file is gone.
func (f *FileStore) atRevision(ref Ref, rev int64) error {
	data, err := os.ReadFile(f.cache.path(ref))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w: deleted since it was read (%w)", ref, ErrConflict, ErrNotFound)
	case err != nil:
		return fmt.Errorf("reading %s: %w", relPath(ref), err)
	}
	if cur := contentRevision(data); cur != rev {
		return fmt.Errorf("%s: %w: changed since it was read (revision %d, now %d)", ref, ErrConflict, rev, cur)
	}
	return nil
}

// DeleteIf deletes ref only if its file's revision (as Get returns it) is
// rev; otherwise it returns an error wrapping ErrConflict, and ErrNotFound
// too when the file is gone. Otherwise it behaves as Delete of ref alone.
func (f *FileStore) DeleteIf(ctx context.Context, ref Ref, rev int64) error {
	ref, err := normalizeRef(ref)
	if err != nil {
		return err
	}
	return f.delete(ctx, []Ref{ref}, func() error { return f.atRevision(ref, rev) })
}

// KeepAlive returns an error wrapping ErrNotImplemented: the file store
// has no liveness.
func (f *FileStore) KeepAlive(ctx context.Context, node string, ttl time.Duration) error {
	return fmt.Errorf("file datastore liveness: %w", ErrNotImplemented)
}

// Live returns an error wrapping ErrNotImplemented: the file store has no
// liveness.
func (f *FileStore) Live(ctx context.Context) (map[string]bool, error) {
	return nil, fmt.Errorf("file datastore liveness: %w", ErrNotImplemented)
}
