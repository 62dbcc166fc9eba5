package pktsock_test

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/agent/pktsock"
	"github.com/calyxnet/calyx/tests/lab"
)

// requireRoot fails under CI (where the runner must give the tests root)
// and skips elsewhere.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	lab.SkipOrFailInCI(t, "not root: pktsock tests need packet sockets and network namespaces")
}

// udpPort6767 takes IPv4/UDP frames to port 6767 (a test port, so nothing
// else on the machine answers) and nothing else.
var udpPort6767 = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 23, Size: 1}, // IPv4 protocol
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipFalse: 3},
	bpf.LoadMemShift{Off: 14},          // X = IPv4 header length
	bpf.LoadIndirect{Off: 16, Size: 2}, // UDP destination port
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6767, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 1 << 16},
}

// pair is a veth pair whose ends are in two fresh namespaces, with a
// socket on each side: a (filtered for UDP 6767) and b (every IPv4 frame).
type pair struct {
	a, b       *pktsock.Conn
	aIdx, bIdx int
	bMAC       net.HardwareAddr
}

func newPair(t *testing.T) *pair {
	t.Helper()
	requireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread stays locked and dies with the goroutine: never
			// hand a thread in another namespace back to the runtime.
			runtime.LockOSThread()
		}
		orig.Close()
	}()
	nsB, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { nsB.Close() })
	nsA, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { nsA.Close() })

	la := netlink.NewLinkAttrs()
	la.Name = "pa"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "pb"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	pa, err := netlink.LinkByName("pa")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := netlink.LinkByName("pb")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(pb, int(nsB)); err != nil {
		t.Fatalf("move pb: %v", err)
	}
	if err := netlink.LinkSetUp(pa); err != nil {
		t.Fatal(err)
	}
	p := &pair{aIdx: pa.Attrs().Index}
	if p.a, err = pktsock.Listen(unix.ETH_P_IP, udpPort6767); err != nil {
		t.Fatalf("listen in a: %v", err)
	}
	t.Cleanup(func() { p.a.Close() })

	if err := netns.Set(nsB); err != nil {
		t.Fatal(err)
	}
	pb, err = netlink.LinkByName("pb")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(pb); err != nil {
		t.Fatal(err)
	}
	p.bIdx, p.bMAC = pb.Attrs().Index, pb.Attrs().HardwareAddr
	if p.b, err = pktsock.Listen(unix.ETH_P_IP, nil); err != nil {
		t.Fatalf("listen in b: %v", err)
	}
	t.Cleanup(func() { p.b.Close() })
	return p
}

// udpFrame is a broadcast IPv4/UDP frame from src to port, optionally
// with an 802.1Q tag.
func udpFrame(t *testing.T, src net.HardwareAddr, port uint16, vlan uint16, payload string) []byte {
	return udpFrameTo(t, src, layers.EthernetBroadcast, port, vlan, payload)
}

func udpFrameTo(t *testing.T, src, dst net.HardwareAddr, port uint16, vlan uint16, payload string) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4(192, 0, 2, 2), DstIP: net.IPv4bcast}
	udp := &layers.UDP{SrcPort: 6868, DstPort: layers.UDPPort(port)}
	udp.SetNetworkLayerForChecksum(ip)
	ls := []gopacket.SerializableLayer{eth}
	if vlan != 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: vlan, Type: layers.EthernetTypeIPv4})
	}
	ls = append(ls, ip, udp, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func payloadOf(t *testing.T, frame []byte) string {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok {
		t.Fatalf("not a UDP frame: %v", p)
	}
	return string(udp.Payload)
}

// TestPrivilegedFilterAndInterface writes frames on one side of a veth
// pair and reads them on the other: only the frame the filter takes
// arrives (not another port, not the same frame with a VLAN tag or to
// another unicast MAC), with
// the receiving interface's ifindex, and the writer does not read its own
// frames back.
func TestPrivilegedFilterAndInterface(t *testing.T) {
	p := newPair(t)
	for _, f := range [][]byte{
		udpFrame(t, p.bMAC, 6768, 0, "other port"),
		udpFrame(t, p.bMAC, 6767, 5, "vlan tagged"),
		udpFrameTo(t, p.bMAC, net.HardwareAddr{2, 0, 0, 0, 0, 9}, 6767, 0, "to another MAC"),
		udpFrame(t, p.bMAC, 6767, 0, "taken"),
	} {
		if err := p.b.WriteTo(f, p.bIdx); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	buf := make([]byte, 2048)
	p.a.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, idx, err := p.a.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if got := payloadOf(t, buf[:n]); got != "taken" {
		t.Errorf("first frame read is %q, want the one the filter takes", got)
	}
	if idx != p.aIdx {
		t.Errorf("ifindex %d, want %d (pa)", idx, p.aIdx)
	}
	p.a.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := p.a.ReadFrom(buf); !os.IsTimeout(err) {
		t.Errorf("second read: %d bytes, err %v; want a timeout (nothing else passes the filter)", n, err)
	}
	p.b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := p.b.ReadFrom(buf); !os.IsTimeout(err) {
		t.Errorf("writer read %d bytes, err %v; want a timeout (its own frames are not read back)", n, err)
	}
}

// TestPrivilegedTruncatedAndClose: a frame longer than the buffer is
// reported as truncated, and Close wakes a reader blocked without a
// deadline.
func TestPrivilegedTruncatedAndClose(t *testing.T) {
	p := newPair(t)
	if err := p.b.WriteTo(udpFrame(t, p.bMAC, 6767, 0, "a payload longer than the buffer"), p.bIdx); err != nil {
		t.Fatal(err)
	}
	p.a.SetReadDeadline(time.Now().Add(5 * time.Second))
	small := make([]byte, 40)
	if _, idx, err := p.a.ReadFrom(small); !errors.Is(err, pktsock.ErrTruncated) || idx != p.aIdx {
		t.Fatalf("read into 40 bytes: ifindex %d, err %v; want ErrTruncated on %d", idx, err, p.aIdx)
	}

	p.a.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, _, err := p.a.ReadFrom(make([]byte, 2048))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	p.a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("blocked read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not wake the blocked reader")
	}
	if err := p.a.WriteTo(udpFrame(t, p.bMAC, 6767, 0, "x"), p.aIdx); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after Close: %v, want os.ErrClosed", err)
	}
}
