package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The relay is the lab's stand-in for a hypervisor's virtio-net backend
// (QEMU with vhost-net): it owns the file descriptors of two tap devices, the
// host side in the host namespace and the instance's eth0 in the workload
// namespace, and copies every frame one fd yields into the other. Both taps
// carry a virtio_net_hdr and have TSO and checksum offload switched on, so a
// TCP super-frame the host stack hands to its tap arrives in the instance as
// one GSO packet, exactly as it would reach a guest, and the other way round.

// Offload flags for TUNSETOFFLOAD (linux/if_tun.h); golang.org/x/sys/unix
// does not define them.
const (
	tunFCSUM = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

const (
	// vnetHdrLen is sizeof(struct virtio_net_hdr), the tun driver's default
	// TUNSETVNETHDRSZ; both taps use it, so a header read from one is valid
	// for the other as it is.
	vnetHdrLen = 10
	// relayFrameMax is the largest frame a read may return: a 64 KiB GSO
	// super-frame plus its Ethernet and VLAN headers.
	relayFrameMax = 64<<10 + 64
	// virtioGSONone is VIRTIO_NET_HDR_GSO_NONE; any other gso_type (the
	// header's second byte, without the ECN bit) marks a super-frame.
	virtioGSONone = 0
	virtioGSOECN  = 0x80
)

// VMRelayConfig is what "calyx-lab vm-relay" is given.
type VMRelayConfig struct {
	// HostNS and HostTap name the host-side tap and the namespace it is
	// created in.
	HostNS, HostTap string
	// VMNS and VMTap name the instance's tap ("eth0") and its namespace.
	VMNS, VMTap string
	// StatsPath, when set, is the JSON file RelayStats are written to (via a
	// rename, so readers never see half a file): once both taps exist
	// (which is how the lab knows the relay is ready), on SIGUSR1 and on
	// exit.
	StatsPath string
	// ParentPID, when positive, makes the relay exit once its parent
	// process is no longer ParentPID (the parent died and the relay was
	// re-parented), so a crashed lab does not leave VMs running.
	ParentPID int
}

// RelayCounters counts the frames of one direction of a relay.
type RelayCounters struct {
	// Frames and Bytes count frames read from the source tap (Bytes
	// without the virtio_net_hdr).
	Frames uint64 `json:"frames"`
	Bytes  uint64 `json:"bytes"`
	// MaxFrame is the longest frame seen, in bytes without the
	// virtio_net_hdr: above the MTU only if GSO super-frames crossed.
	MaxFrame uint64 `json:"max_frame"`
	// RecentMaxFrame is the longest frame since the previous stats file
	// was written (for the first file, since the relay started): the
	// largest frame between two RelayStats calls, for a reader that
	// wants it per measurement.
	RecentMaxFrame uint64 `json:"recent_max_frame"`
	// GSOFrames counts frames whose header carried a GSO type.
	GSOFrames uint64 `json:"gso_frames"`
	// WriteErrors counts frames the destination tap refused (dropped).
	WriteErrors uint64 `json:"write_errors"`
}

// RelayStats is the content of a relay's stats file.
type RelayStats struct {
	// PID is the relay's process id.
	PID int `json:"pid"`
	// HostNS, HostTap and HostIfindex identify the host-side tap.
	HostNS      string `json:"host_ns"`
	HostTap     string `json:"host_tap"`
	HostIfindex int    `json:"host_ifindex"`
	// VMNS, VMTap and VMIfindex identify the instance's tap.
	VMNS      string `json:"vm_ns"`
	VMTap     string `json:"vm_tap"`
	VMIfindex int    `json:"vm_ifindex"`
	// Updates counts the SIGUSR1s answered, so a reader can tell a fresh
	// file from the previous one.
	Updates uint64 `json:"updates"`
	// Final is set in the file written on exit, with the reason in Exit.
	Final bool   `json:"final"`
	Exit  string `json:"exit,omitempty"`
	// HostToVM counts what the host tap transmitted (read from its fd and
	// written into the instance); VMToHost the other way.
	HostToVM RelayCounters `json:"host_to_vm"`
	VMToHost RelayCounters `json:"vm_to_host"`
}

// relayDir is one direction's live counters, written by its pump goroutine
// and read by the stats writer.
type relayDir struct {
	frames, bytes, maxFrame, gsoFrames, writeErrors atomic.Uint64
	// recentMax is MaxFrame since the last snapshot, which resets it.
	recentMax atomic.Uint64
}

func (d *relayDir) snapshot() RelayCounters {
	return RelayCounters{
		Frames:         d.frames.Load(),
		Bytes:          d.bytes.Load(),
		MaxFrame:       d.maxFrame.Load(),
		RecentMaxFrame: d.recentMax.Swap(0),
		GSOFrames:      d.gsoFrames.Load(),
		WriteErrors:    d.writeErrors.Load(),
	}
}

// tap is one open tap device.
type tap struct {
	ns, name string
	ifindex  int
	f        *os.File
}

// openTap creates the non-persistent tap name in namespace ns with a
// virtio_net_hdr per frame and checksum and TSO offload, as a virtio-net
// backend does. The device lives as long as the returned file is open.
func openTap(ns, name string) (*tap, error) {
	t := &tap{ns: ns, name: name}
	err := InNS(ns, func() error {
		// Non-blocking, so the runtime's poller serves the reads and
		// closing the file ends a read in progress.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("tap name %q: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		// TUNSETIFF creates the device in this thread's namespace.
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("create tap %s: %w", name, err)
		}
		// The offloads the "guest" end accepts: without them the tap
		// segments and checksums every frame before it reaches the fd.
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCSUM|tunFTSO4|tunFTSO6); err != nil {
			unix.Close(fd)
			return fmt.Errorf("tap %s: TUNSETOFFLOAD: %w", name, err)
		}
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("tap %s: %w", name, err)
		}
		t.ifindex = ifc.Index
		t.f = os.NewFile(uintptr(fd), "tap "+name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	return t, nil
}

// pump copies frames from src to dst until reading src fails (the device
// is gone, or the relay closed it) and returns that error. A frame dst
// refuses is counted and dropped: a stopped or deleted peer must not stop
// the other direction.
func pump(src, dst *tap, d *relayDir) error {
	buf := make([]byte, vnetHdrLen+relayFrameMax)
	for {
		n, err := src.f.Read(buf)
		if err != nil {
			return err
		}
		if n < vnetHdrLen {
			continue // no frame behind the header: nothing to forward
		}
		size := uint64(n - vnetHdrLen)
		d.frames.Add(1)
		d.bytes.Add(size)
		if size > d.maxFrame.Load() {
			d.maxFrame.Store(size) // only this goroutine writes it
		}
		// snapshot resets recentMax from another goroutine.
		for {
			cur := d.recentMax.Load()
			if size <= cur || d.recentMax.CompareAndSwap(cur, size) {
				break
			}
		}
		if buf[1]&^virtioGSOECN != virtioGSONone {
			d.gsoFrames.Add(1)
		}
		// The header goes across unchanged: its GSO type and size and
		// its checksum offsets describe the frame for the receiving tap
		// just as they did for the sending one.
		if _, err := dst.f.Write(buf[:n]); err != nil {
			d.writeErrors.Add(1)
		}
	}
}

// RunVMRelay creates both taps and relays frames between them until ctx is
// cancelled, SIGTERM, SIGINT or SIGHUP arrives, the parent dies (with
// ParentPID) or reading both taps has failed (both devices deleted). Closing
// the fds on return removes both taps, as a stopped QEMU does.
func RunVMRelay(ctx context.Context, cfg VMRelayConfig) error {
	if cfg.HostNS == "" || cfg.HostTap == "" || cfg.VMNS == "" || cfg.VMTap == "" {
		return errors.New("vm relay: host namespace, host tap, vm namespace and vm tap are all required")
	}
	if cfg.ParentPID > 0 && os.Getppid() != cfg.ParentPID {
		return fmt.Errorf("vm relay: parent %d already gone", cfg.ParentPID)
	}
	// Before the first stats file: from then on the lab may send SIGUSR1,
	// whose default action would kill the relay.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(usr1)
	defer signal.Stop(term)

	host, err := openTap(cfg.HostNS, cfg.HostTap)
	if err != nil {
		return fmt.Errorf("vm relay: host tap: %w", err)
	}
	vm, err := openTap(cfg.VMNS, cfg.VMTap)
	if err != nil {
		host.f.Close()
		return fmt.Errorf("vm relay: vm tap: %w", err)
	}

	st := RelayStats{
		PID:    os.Getpid(),
		HostNS: cfg.HostNS, HostTap: cfg.HostTap, HostIfindex: host.ifindex,
		VMNS: cfg.VMNS, VMTap: cfg.VMTap, VMIfindex: vm.ifindex,
	}
	var toVM, toHost relayDir
	write := func() error {
		st.HostToVM, st.VMToHost = toVM.snapshot(), toHost.snapshot()
		return writeRelayStats(cfg.StatsPath, st)
	}
	if err := write(); err != nil {
		host.f.Close()
		vm.f.Close()
		return err
	}

	// One goroutine per direction; each ends when its source tap fails.
	var wg sync.WaitGroup
	var hostErr, vmErr error
	hostDone, vmDone := make(chan struct{}), make(chan struct{})
	wg.Go(func() { hostErr = pump(host, vm, &toVM); close(hostDone) })
	wg.Go(func() { vmErr = pump(vm, host, &toHost); close(vmDone) })

	var parentTick <-chan time.Time
	if cfg.ParentPID > 0 {
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		parentTick = tk.C
	}
	var exit error
	for exit == nil && st.Exit == "" {
		select {
		case <-usr1:
			st.Updates++
			if err := write(); err != nil {
				fmt.Fprintf(os.Stderr, "vm relay: %v\n", err)
			}
		case s := <-term:
			st.Exit = "signal " + s.String()
		case <-ctx.Done():
			st.Exit = "cancelled"
		case <-parentTick:
			if os.Getppid() != cfg.ParentPID {
				exit = fmt.Errorf("vm relay: parent %d gone", cfg.ParentPID)
			}
		case <-hostDone:
			hostDone = nil
			if vmDone == nil {
				exit = fmt.Errorf("vm relay: both taps failed: host tap %s: %v; vm tap %s: %v", cfg.HostTap, hostErr, cfg.VMTap, vmErr)
			}
		case <-vmDone:
			vmDone = nil
			if hostDone == nil {
				exit = fmt.Errorf("vm relay: both taps failed: host tap %s: %v; vm tap %s: %v", cfg.HostTap, hostErr, cfg.VMTap, vmErr)
			}
		}
	}
	// Closing the fds ends both pumps and removes both devices.
	host.f.Close()
	vm.f.Close()
	wg.Wait()
	st.Final = true
	if exit != nil {
		st.Exit = exit.Error()
	}
	return errors.Join(exit, write())
}

// writeRelayStats writes st to path through a temporary file and a rename,
// so a reader sees either the old or the new content. An empty path writes
// nothing.
func writeRelayStats(path string, st RelayStats) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("vm relay stats: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("vm relay stats: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("vm relay stats: %w", err)
	}
	return nil
}

// ReadRelayStats reads a stats file written by a relay.
func ReadRelayStats(path string) (RelayStats, error) {
	var st RelayStats
	b, err := os.ReadFile(path)
	if err != nil {
		return st, fmt.Errorf("relay stats: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("relay stats %s: %w", path, err)
	}
	return st, nil
}
