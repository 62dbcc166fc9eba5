// Package undo keeps the ledger of the host settings the agent changed, with
// what each was before, so that `calyx-agent --cleanup` can put the host
// back as it found it when it is decommissioned.
//
// The ledger is a BPF hash map the agent creates and pins beside its other
// pins (undo.PinName under the bpffs directory): it lives exactly as long
// as the dataplane's state (a reboot clears both, and the kernel's
// settings with them), and it is never a file outside the pin directory.
// The first original recorded for a setting wins: an agent restart, which
// finds the setting already changed, must not take its own value for the
// host's.
package undo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// PinName is the ledger's pin under the bpffs directory, with its layout
// version as every calyx pin has (bpfmap.PinName).
const PinName = "calyx_undo_v1"

// unversionedPin is the ledger's pin as builds before versioned pin names
// left it (the same layout): Open moves it to PinName.
const unversionedPin = "calyx_undo"

// The sizes of a ledger entry: a setting's /proc/sys path and its
// original value. A longer value (a very long ip_local_reserved_ports
// list) is refused: restoring half of it would be worse than not
// recording. Entries are allocated as they are written (no
// preallocation): a ledger holds a few per workload interface, and Prune
// drops those of interfaces that are gone.
const (
	keySize    = 128
	valueSize  = 1024
	maxEntries = 8192
)

// Ledger is the pinned map of originals. Its zero value is not usable: see
// Open.
type Ledger struct {
	m *ebpf.Map
}

// Open opens the ledger pinned under dir, creating and pinning it when
// there is none. dir must be on a bpffs (loader.EnsureBPFFS). Requires
// CAP_BPF.
func Open(dir string) (*Ledger, error) {
	path := filepath.Join(dir, PinName)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		if m, err = ebpf.LoadPinnedMap(filepath.Join(dir, unversionedPin), nil); err == nil {
			// Renamed in place (one atomic rename on the bpffs).
			if perr := m.Pin(path); perr != nil {
				m.Close()
				return nil, fmt.Errorf("move undo ledger to %s: %w", path, perr)
			}
		}
	}
	if err == nil {
		if m.KeySize() != keySize || m.ValueSize() != valueSize {
			m.Close()
			return nil, fmt.Errorf("open undo ledger %s: key %d and value %d bytes, want %d and %d", path, m.KeySize(), m.ValueSize(), keySize, valueSize)
		}
		return &Ledger{m: m}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open undo ledger %s: %w", path, err)
	}
	m, err = ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: PinName, Type: ebpf.Hash, KeySize: keySize,
		ValueSize: valueSize, MaxEntries: maxEntries, Flags: unix.BPF_F_NO_PREALLOC, Pinning: ebpf.PinByName},
		ebpf.MapOptions{PinPath: dir})
	if err != nil {
		return nil, fmt.Errorf("create undo ledger %s: %w", path, err)
	}
	return &Ledger{m: m}, nil
}

// OpenExisting opens the ledger pinned under dir for --cleanup; with none
// it returns (nil, nil): nothing was recorded.
func OpenExisting(dir string) (*Ledger, error) {
	for _, name := range []string{PinName, unversionedPin} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return Open(dir)
		}
	}
	return nil, nil
}

// Close releases the ledger (its pin stays).
func (l *Ledger) Close() error { return l.m.Close() }

// Record notes that setting (a path under /proc/sys) held original before
// the agent changed it, unless an original is recorded already.
func (l *Ledger) Record(setting, original string) error {
	k, err := fixed(setting, keySize, "setting")
	if err != nil {
		return err
	}
	v, err := fixed(original, valueSize, "original value of "+setting)
	if err != nil {
		return err
	}
	if err := l.m.Update(k, v, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("record the original of %s: %w", setting, err)
	}
	return nil
}

// Change is a setting and the value it had before the agent changed it.
type Change struct {
	Setting, Original string
}

// Changes lists the recorded changes, by setting.
func (l *Ledger) Changes() ([]Change, error) {
	var out []Change
	k, v := make([]byte, keySize), make([]byte, valueSize)
	it := l.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Change{Setting: unfixed(k), Original: unfixed(v)})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read undo ledger: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Setting < out[j].Setting })
	return out, nil
}

// Prune forgets the settings that no longer exist (those of a workload
// interface that is gone: a new one of the same name starts from the
// kernel's defaults) and returns how many it forgot.
func (l *Ledger) Prune() (int, error) {
	changes, err := l.Changes()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range changes {
		if _, err := os.Stat(c.Setting); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		k, _ := fixed(c.Setting, keySize, "setting")
		if err := l.m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("forget %s: %w", c.Setting, err)
		}
		n++
	}
	return n, nil
}

// SetSysctl writes value to the setting at path (under /proc/sys), first
// recording its current value in l when it differs (l nil: nothing is
// recorded). It returns whether it changed the setting.
func SetSysctl(l *Ledger, path, value string) (bool, error) {
	cur, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	if string(bytes.TrimSpace(cur)) == value {
		return false, nil
	}
	if l != nil {
		if err := l.Record(path, string(bytes.TrimSpace(cur))); err != nil {
			return false, err
		}
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return false, err
	}
	return true, nil
}

func fixed(s string, size int, what string) ([]byte, error) {
	if len(s) >= size {
		return nil, fmt.Errorf("undo ledger: %s is %d bytes, at most %d fit", what, len(s), size-1)
	}
	b := make([]byte, size)
	copy(b, s)
	return b, nil
}

func unfixed(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
