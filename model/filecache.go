package model

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
)

// fileStat identifies one version of a file. A replacement by rename (how
// the store writes) always changes the inode, and rename keeps size and
// mtime, so a stat taken of the temporary file identifies the final one.
type fileStat struct {
	ino   uint64
	size  int64
	mtime int64
}

func statOf(fi fs.FileInfo) fileStat {
	st := fileStat{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = uint64(sys.Ino)
	}
	return st
}

type cacheEntry struct {
	// stat is the version last read, good or bad, so that an unchanged
	// broken file is neither re-parsed nor re-reported on every scan.
	stat fileStat
	// res is the last version that parsed; nil if none ever did.
	res Resource
}

// fileCache holds the parsed resources of a store directory, keyed by kind
// and file name, so that only files that changed are read again.
type fileCache struct {
	dir     string
	entries map[string]map[string]cacheEntry // kind → name → entry
	parses  *atomic.Int64                    // counts file parses; tests use it
}

func newFileCache(dir string, parses *atomic.Int64) *fileCache {
	c := &fileCache{dir: dir, entries: map[string]map[string]cacheEntry{}, parses: parses}
	for _, k := range kindOrder {
		c.entries[k] = map[string]cacheEntry{}
	}
	return c
}

func (c *fileCache) clone() *fileCache {
	n := newFileCache(c.dir, c.parses)
	for k, m := range c.entries {
		for name, e := range m {
			n.entries[k][name] = e
		}
	}
	return n
}

func kindDir(kind string) string { return strings.ToLower(kind) }

// kindOfDir maps a directory name back to its kind.
func kindOfDir(dir string) (string, bool) {
	for _, k := range kindOrder {
		if kindDir(k) == dir {
			return k, true
		}
	}
	return "", false
}

func (c *fileCache) path(ref Ref) string {
	return filepath.Join(c.dir, kindDir(ref.Kind), ref.Name+".yaml")
}

func relPath(ref Ref) string { return kindDir(ref.Kind) + "/" + ref.Name + ".yaml" }

// resourceFile reports whether a directory entry name is a resource file;
// dotfiles (our temporaries, editor swap files) and other suffixes are not.
func resourceFile(name string) (string, bool) {
	if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".yaml") {
		return "", false
	}
	return strings.TrimSuffix(name, ".yaml"), true
}

// refresh brings one entry up to date with its file. It reports whether the
// resource visible in the snapshot changed. A file that cannot be parsed is
// reported through err and its previous good version, if any, is kept.
// With force the file is read even if its stat looks unchanged (a watch
// event is better evidence than a coarse mtime).
func (c *fileCache) refresh(ref Ref, force bool) (changed bool, err error) {
	old, had := c.entries[ref.Kind][ref.Name]
	return c.store(ref, c.read(ref, old, had, force))
}

// fileRead is what read found of one file, for store to record.
type fileRead struct {
	old       cacheEntry
	had       bool
	unchanged bool // the stat matches the entry: nothing to do
	gone      bool
	st        fileStat
	res       Resource
	err       error // a parse error keeps the old version; others skip the file
	parsed    bool  // err is a parse error
}

// read stats and, when it changed, reads and parses ref's file. It does
// not touch the cache, so that many reads can run at once.
func (c *fileCache) read(ref Ref, old cacheEntry, had, force bool) fileRead {
	r := fileRead{old: old, had: had}
	if !validName(ref.Name) {
		r.err = fmt.Errorf("%s: the file name is not a valid resource name (lowercase letters, digits, '-' and '.'); ignored", relPath(ref))
		return r
	}
	path := c.path(ref)
	if had && !force {
		// The common case in a scan: one stat, no open.
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && statOf(fi) == old.stat {
			r.unchanged = true
			return r
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		r.gone = true
		return r
	}
	if err != nil {
		r.err = fmt.Errorf("%s: %w", relPath(ref), err)
		return r
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		r.err = fmt.Errorf("%s: %w", relPath(ref), err)
		return r
	}
	if !fi.Mode().IsRegular() {
		r.err = fmt.Errorf("%s: not a regular file; ignored", relPath(ref))
		return r
	}
	r.st = statOf(fi)
	data, err := io.ReadAll(f)
	if err != nil {
		r.err = fmt.Errorf("%s: %w", relPath(ref), err)
		return r
	}
	c.parses.Add(1)
	r.res, r.err = parseFile(data, ref)
	r.parsed = true
	return r
}

// store records what read found; it reports whether the resource visible
// in the snapshot changed, and the file's problem.
func (c *fileCache) store(ref Ref, r fileRead) (changed bool, err error) {
	entries := c.entries[ref.Kind]
	switch {
	case r.unchanged:
		return false, nil
	case r.gone:
		delete(entries, ref.Name)
		return r.had && r.old.res != nil, nil
	case r.err != nil && !r.parsed:
		return false, r.err
	case r.err != nil:
		entries[ref.Name] = cacheEntry{stat: r.st, res: r.old.res}
		return false, r.err
	}
	entries[ref.Name] = cacheEntry{stat: r.st, res: r.res}
	return true, nil
}

// parseFile decodes a stored file, which must hold exactly the resource its
// path names.
func parseFile(data []byte, ref Ref) (Resource, error) {
	return parseStored(data, ref, relPath(ref))
}

// parseStored decodes a stored value (YAML, or JSON, which is YAML), which
// must hold exactly the resource ref; where names the value in errors.
func parseStored(data []byte, ref Ref, where string) (Resource, error) {
	rs, err := Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("%s: want exactly one resource, found %d", where, len(rs))
	}
	if got := RefOf(rs[0]); got != ref {
		return nil, fmt.Errorf("%s: holds %s, but its %s says %s", where, got, keyOrPath(where), ref)
	}
	return rs[0], nil
}

func keyOrPath(where string) string {
	if strings.HasPrefix(where, "etcd key ") {
		return "key"
	}
	return "path"
}

// scanKind refreshes every file of one kind and forgets files that are
// gone. It returns whether anything visible changed and the problems met;
// a missing directory reads as empty. The files are read and parsed on
// every CPU (a cold start parses tens of thousands), then recorded in
// directory order.
func (c *fileCache) scanKind(kind string, force bool) (bool, []error) {
	dir := filepath.Join(c.dir, kindDir(kind))
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, []error{fmt.Errorf("reading %s: %w", dir, err)}
	}
	var names []string
	for _, de := range des {
		if name, ok := resourceFile(de.Name()); ok && !de.IsDir() {
			names = append(names, name)
		}
	}
	reads := make([]fileRead, len(names))
	entries := c.entries[kind]
	eachParallel(len(names), func(i int) {
		old, had := entries[names[i]]
		reads[i] = c.read(Ref{kind, names[i]}, old, had, force)
	})
	var errs []error
	changed := false
	present := make(map[string]bool, len(names))
	for i, name := range names {
		present[name] = true
		ch, err := c.store(Ref{kind, name}, reads[i])
		changed = changed || ch
		if err != nil {
			errs = append(errs, err)
		}
	}
	for name, e := range entries {
		if !present[name] {
			delete(entries, name)
			changed = changed || e.res != nil
		}
	}
	return changed, errs
}

func (c *fileCache) scanAll(force bool) (bool, []error) {
	changed := false
	var errs []error
	for _, k := range kindOrder {
		ch, es := c.scanKind(k, force)
		changed = changed || ch
		errs = append(errs, es...)
	}
	return changed, errs
}

// snapshot builds a new Snapshot from the good entries.
func (c *fileCache) snapshot() *Snapshot {
	s := &Snapshot{
		Pools:       make(map[string]*IPPool, len(c.entries[KindIPPool])),
		Nodes:       make(map[string]*Node, len(c.entries[KindNode])),
		Endpoints:   make(map[string]*WorkloadEndpoint, len(c.entries[KindWorkloadEndpoint])),
		FloatingIPs: make(map[string]*FloatingIP, len(c.entries[KindFloatingIP])),
		Policies:    make(map[string]*NetworkPolicy, len(c.entries[KindNetworkPolicy])),
		Config:      DefaultConfig(),
		Blocks:      make(map[string]*IPAMBlock, len(c.entries[KindIPAMBlock])),
		Subnets:     make(map[string]*Subnet, len(c.entries[KindSubnet])),
		BGPPeers:    make(map[string]*BGPPeer, len(c.entries[KindBGPPeer])),
	}
	for _, m := range c.entries {
		for _, e := range m {
			if e.res != nil {
				s.Put(e.res)
			}
		}
	}
	return s
}

// exists reports whether the file for ref exists, parsed or not.
func (c *fileCache) exists(ref Ref) bool {
	_, ok := c.entries[ref.Kind][ref.Name]
	return ok
}
