package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Detached counts what DetachAll took away.
type Detached struct {
	// Links are the pinned TCX and XDP links under the pin directory.
	Links int
	// Filters are clsact filters of calyx's programs (--attach clsact),
	// Qdiscs the clsact qdiscs they leave empty.
	Filters, Qdiscs int
}

// DetachAll detaches every calyx program in the caller's network namespace,
// for decommissioning a host (calyx-agent --cleanup): the links pinned under
// dir (TCX, XDP), and on every interface the clsact filters with calyx's
// handle and a calyx program's name; a clsact qdisc left with no filter goes
// too (the agent added it; an operator's with filters of its own stays).
// It carries on past a failure and returns them all.
func DetachAll(dir string) (Detached, error) {
	var d Detached
	var errs []error
	ents, err := os.ReadDir(filepath.Join(dir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("list link pins: %w", err))
	}
	for _, e := range ents {
		pin := filepath.Join(dir, "links", e.Name())
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			// Not a link (or one the kernel dropped): the pin alone goes.
			if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove pin %s: %w", pin, err))
			}
			continue
		}
		// Unpin, then close: the last reference goes and the link detaches.
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
		} else {
			d.Links++
		}
		l.Close()
	}
	links, err := netlink.LinkList()
	if err != nil {
		return d, errors.Join(append(errs, fmt.Errorf("list interfaces: %w", err))...)
	}
	for _, l := range links {
		f, q, err := detachCalyxFilters(l)
		d.Filters += f
		d.Qdiscs += q
		if err != nil {
			errs = append(errs, err)
		}
	}
	return d, errors.Join(errs...)
}

// detachCalyxFilters deletes calyx's clsact filters on l, and the clsact
// qdisc when that leaves it empty.
func detachCalyxFilters(l netlink.Link) (filters, qdiscs int, err error) {
	name := l.Attrs().Name
	left := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				continue // no clsact qdisc
			}
			return filters, 0, fmt.Errorf("list filters of %s: %w", name, err)
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || bf.Handle != clsactHandle || !strings.HasPrefix(bf.Name, "calyx_") {
				left++
				continue
			}
			if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
				return filters, 0, fmt.Errorf("delete clsact filter %s on %s: %w", bf.Name, name, err)
			}
			filters++
		}
	}
	if filters == 0 || left > 0 {
		return filters, 0, nil
	}
	qd := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscDel(qd); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return filters, 0, fmt.Errorf("delete the clsact qdisc of %s: %w", name, err)
	}
	return filters, 1, nil
}

// RemovePins removes every pin under dir (maps, links, the undo ledger)
// and dir itself, and returns how many pins went. Programs still attached
// by a link pinned there are detached (DetachAll does it first, counted).
func RemovePins(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			n++
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list pins under %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return 0, fmt.Errorf("remove pin directory %s: %w", dir, err)
	}
	return n, nil
}
