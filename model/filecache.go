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
	entries := c.entries[ref.Kind]
	old, had := entries[ref.Name]
	if !validName(ref.Name) {
		return false, fmt.Errorf("%s: the file name is not a valid resource name (lowercase letters, digits, '-' and '.'); ignored", relPath(ref))
	}
	path := c.path(ref)
	if had && !force {
		// The common case in a scan: one stat, no open.
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && statOf(fi) == old.stat {
			return false, nil
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		delete(entries, ref.Name)
		return had && old.res != nil, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", relPath(ref), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("%s: %w", relPath(ref), err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s: not a regular file; ignored", relPath(ref))
	}
	st := statOf(fi)
	data, err := io.ReadAll(f)
	if err != nil {
		return false, fmt.Errorf("%s: %w", relPath(ref), err)
	}
	c.parses.Add(1)
	res, perr := parseFile(data, ref)
	entries[ref.Name] = cacheEntry{stat: st, res: old.res}
	if perr != nil {
		return false, perr
	}
	entries[ref.Name] = cacheEntry{stat: st, res: res}
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
// a missing directory reads as empty.
func (c *fileCache) scanKind(kind string, force bool) (bool, []error) {
	dir := filepath.Join(c.dir, kindDir(kind))
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, []error{fmt.Errorf("reading %s: %w", dir, err)}
	}
	var errs []error
	changed := false
	present := make(map[string]bool, len(des))
	for _, de := range des {
		name, ok := resourceFile(de.Name())
		if !ok || de.IsDir() {
			continue
		}
		present[name] = true
		ch, err := c.refresh(Ref{kind, name}, force)
		changed = changed || ch
		if err != nil {
			errs = append(errs, err)
		}
	}
	for name, e := range c.entries[kind] {
		if !present[name] {
			delete(c.entries[kind], name)
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
