package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpfmap"
)

// Mode is how programs are attached: "auto" (TCX, else clsact), "tcx" or "clsact".
type Mode string

// Attach modes accepted by --attach.
const (
	ModeAuto   Mode = "auto"
	ModeTCX    Mode = "tcx"
	ModeClsact Mode = "clsact"
)

// ParseMode validates an --attach value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeTCX, ModeClsact:
		return m, nil
	}
	return "", fmt.Errorf("attach mode %q: want auto, tcx or clsact", s)
}

// clsact filters are ours when they sit at this priority and handle, so a
// replace swaps the program atomically and a delete removes only ours.
const (
	clsactPrio   = 1
	clsactHandle = 0xca1
)

// Attach puts the ingress and egress programs of role r on an interface
// (for a workload: from-workload on ingress, to-workload on egress). What is already
// attached is swapped in place (link.Update for TCX, filter replace for
// clsact), never detached first. It returns the mode used. With ModeAuto a
// kernel without TCX falls back to clsact; an explicit mode that the kernel
// lacks is an error.
func (dp *Dataplane) Attach(ifname string, ifindex int, r Role, mode Mode) (bpfmap.AttachMode, error) {
	if mode == ModeClsact {
		return bpfmap.AttachClsact, dp.attachClsact(ifindex, r)
	}
	err := dp.attachTCX(ifname, ifindex, r)
	if err == nil {
		// A switch from clsact leaves no second copy running.
		_ = detachClsact(ifindex)
		return bpfmap.AttachTCX, nil
	}
	if mode == ModeAuto && errors.Is(err, ebpf.ErrNotSupported) {
		return bpfmap.AttachClsact, dp.attachClsact(ifindex, r)
	}
	return 0, err
}

func (dp *Dataplane) attachTCX(ifname string, ifindex int, r Role) error {
	for _, h := range Hooks {
		pin := dp.linkPin(ifindex, h)
		prog := dp.program(r, h)
		if err := dp.swapPinnedLink(pin, prog); err == nil {
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			// A defunct link (its interface was deleted and the index
			// reused) cannot be updated: replace the pin.
			_ = os.Remove(pin)
		}
		attach := ebpf.AttachTCXIngress
		if h == HookEgress {
			attach = ebpf.AttachTCXEgress
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
		if err != nil {
			return fmt.Errorf("attach tcx %s to %s (ifindex %d): %w", h, ifname, ifindex, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin tcx link %s: %w", pin, err)
		}
	}
	return nil
}

// swapPinnedLink runs prog on the pinned link (link.Update: atomic, no
// packet sees neither program). While a migration is under way the
// program it ran before is kept, for Revert. An error wrapping
// os.ErrNotExist: no such pin.
func (dp *Dataplane) swapPinnedLink(pin string, prog *ebpf.Program) error {
	if dp.Migrating() {
		if _, ok := dp.previous[pin]; !ok {
			if id, err := linkProgramID(pin); err == nil {
				if prev, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
					if dp.previous == nil {
						dp.previous = map[string]*ebpf.Program{}
					}
					dp.previous[pin] = prev
				}
			}
		}
	}
	return updatePinnedLink(pin, prog)
}

// keepPreviousFilter records, for Revert, the program calyx's clsact filter
// at f's place runs before f replaces it (none there: nothing to record).
func (dp *Dataplane) keepPreviousFilter(f *netlink.BpfFilter) {
	key := fmt.Sprintf("clsact/%d/%x", f.LinkIndex, f.Parent)
	if _, ok := dp.previous[key]; ok {
		return
	}
	fs, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: f.LinkIndex}}, f.Parent)
	if err != nil {
		return
	}
	for _, cur := range fs {
		bf, ok := cur.(*netlink.BpfFilter)
		if !ok || bf.Handle != clsactHandle || bf.Priority != clsactPrio {
			continue
		}
		if prev, err := ebpf.NewProgramFromID(ebpf.ProgramID(bf.Id)); err == nil {
			if dp.previous == nil {
				dp.previous = map[string]*ebpf.Program{}
			}
			dp.previous[key] = prev
			prevFilter := *f
			prevFilter.Name = bf.Name
			dp.previousFilters = append(dp.previousFilters, previousFilter{key: key, filter: prevFilter})
		}
		return
	}
}

// previousFilter is a clsact filter as it was before a migration swapped
// its program (the program is in Dataplane.previous under key).
type previousFilter struct {
	key    string
	filter netlink.BpfFilter
}

// updatePinnedLink runs prog on the link pinned at pin.
func updatePinnedLink(pin string, prog *ebpf.Program) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Update(prog); err != nil {
		return fmt.Errorf("update link %s: %w", pin, err)
	}
	return nil
}

// linkProgramID returns the ID of the program the link pinned at pin runs.
func linkProgramID(pin string) (uint32, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("link %s: %w", pin, err)
	}
	return uint32(info.Program), nil
}

func (dp *Dataplane) attachClsact(ifindex int, r Role) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	for _, h := range Hooks {
		parent := uint32(netlink.HANDLE_MIN_INGRESS)
		if h == HookEgress {
			parent = netlink.HANDLE_MIN_EGRESS
		}
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: clsactHandle,
				Priority: clsactPrio, Protocol: unix.ETH_P_ALL},
			Fd: dp.program(r, h).FD(), Name: ProgramName(r, h), DirectAction: true,
		}
		if dp.Migrating() {
			dp.keepPreviousFilter(f)
		}
		if err := netlink.FilterReplace(f); err != nil {
			return fmt.Errorf("attach clsact %s filter to ifindex %d: %w", h, ifindex, err)
		}
	}
	return nil
}

// Detach removes calyx's programs from an interface, by either mode. An
// interface that is already gone is not an error: the kernel detached
// everything with it.
func (dp *Dataplane) Detach(ifname string, ifindex int) error {
	var errs []error
	for _, h := range Hooks {
		pin := dp.linkPin(ifindex, h)
		l, err := link.LoadPinnedLink(pin, nil)
		if err == nil {
			// Unpin then close: the last reference goes and the link detaches.
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
			}
			l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			_ = os.Remove(pin)
		}
	}
	if err := detachClsact(ifindex); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func detachClsact(ifindex int) error {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent,
			Handle: clsactHandle, Priority: clsactPrio, Protocol: unix.ETH_P_ALL}}
		err := netlink.FilterDel(f)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("delete clsact filter on ifindex %d: %w", ifindex, err)
		}
	}
	return nil
}

// RemoveStalePin removes a TCX link pin whose interface is gone or no longer
// an endpoint, detaching it if it still runs.
func RemoveStalePin(p PinnedLink) error {
	l, err := link.LoadPinnedLink(p.Path, nil)
	if err != nil {
		if rmErr := os.Remove(p.Path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return fmt.Errorf("remove pin %s: %w", p.Path, rmErr)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", p.Path, err)
	}
	return nil
}

// AttachedPrograms asks the kernel which programs run on a hook of an
// interface in the caller's network namespace, by TCX and by clsact filter,
// so that a record can be checked against what really runs. An interface
// that does not exist has none.
func AttachedPrograms(ifindex int, h Hook) ([]uint32, error) {
	attach, parent := ebpf.AttachTCXIngress, uint32(netlink.HANDLE_MIN_INGRESS)
	if h == HookEgress {
		attach, parent = ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
	}
	var ids []uint32
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
	switch {
	case err == nil:
		for _, p := range res.Programs {
			ids = append(ids, uint32(p.ID))
		}
	case errors.Is(err, unix.ENODEV), errors.Is(err, os.ErrNotExist):
		return nil, nil
	case !errors.Is(err, ebpf.ErrNotSupported):
		return nil, fmt.Errorf("query tcx %s programs of ifindex %d: %w", h, ifindex, err)
	}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return ids, nil // gone since the query
	}
	fs, err := netlink.FilterList(l, parent)
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("list %s filters of ifindex %d: %w", h, ifindex, err)
	}
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			ids = append(ids, uint32(bf.Id))
		}
	}
	return ids, nil
}

// XDPMode says where the host prefilter runs on the underlay (--xdp):
// "auto" (XDP in driver mode on a physical NIC, the TC check on a veth,
// whose peer would lose GRO/TSO to an XDP program), "native" (XDP in
// driver mode, or fail) or "off" (the TC check).
type XDPMode string

// Prefilter modes accepted by --xdp.
const (
	XDPAuto   XDPMode = "auto"
	XDPNative XDPMode = "native"
	XDPOff    XDPMode = "off"
)

// ParseXDPMode validates an --xdp value. Generic XDP is refused: it runs
// after the skb is built, where the TC check already is.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case XDPAuto, XDPNative, XDPOff:
		return m, nil
	case "generic":
		return "", fmt.Errorf("xdp mode %q: generic XDP runs after the kernel has built the skb, as the TC check does; use off, native or auto", s)
	}
	return "", fmt.Errorf("xdp mode %q: want off, native or auto", s)
}

func (dp *Dataplane) xdpPin(ifindex int) string {
	return filepath.Join(dp.dir, "links", fmt.Sprintf("xdp_%d", ifindex))
}

// AttachXDP puts calyx_xdp_prefilter on an interface in driver mode (a
// generic-mode program would run after the skb is built, which is what the
// TC check does already). A pinned link is updated in place. A driver
// without XDP support gives an error wrapping ebpf.ErrNotSupported or the
// kernel's EOPNOTSUPP.
func (dp *Dataplane) AttachXDP(ifname string, ifindex int) error {
	pin := dp.xdpPin(ifindex)
	prog := dp.objs.CalyxXdpPrefilter
	if err := dp.swapPinnedLink(pin, prog); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(pin)
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("attach xdp prefilter to %s (ifindex %d): %w", ifname, ifindex, err)
	}
	defer l.Close()
	if dp.dir == "" {
		return fmt.Errorf("attach xdp prefilter to %s: no pin directory to keep the link in", ifname)
	}
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(pin), err)
	}
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin xdp link %s: %w", pin, err)
	}
	return nil
}

// DetachXDP removes the prefilter from an interface; none attached is not
// an error.
func (dp *Dataplane) DetachXDP(ifindex int) error {
	pin := dp.xdpPin(ifindex)
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open xdp link %s: %w", pin, err)
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pin, err)
	}
	return nil
}

// XDPAttached says whether the prefilter's link is pinned for ifindex.
func (dp *Dataplane) XDPAttached(ifindex int) bool {
	_, err := os.Stat(dp.xdpPin(ifindex))
	return err == nil
}

// PrefilterProgram is calyx_xdp_prefilter (tests, benchmarks).
func (dp *Dataplane) PrefilterProgram() *ebpf.Program { return dp.objs.CalyxXdpPrefilter }
