package bpftest

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TC verdicts (linux/pkt_cls.h).
const (
	ActOK       = 0
	ActShot     = 2
	ActRedirect = 7
)

// VerdictName renders a TC verdict for messages.
func VerdictName(v uint32) string {
	switch v {
	case ActOK:
		return "TC_ACT_OK"
	case ActShot:
		return "TC_ACT_SHOT"
	case ActRedirect:
		return "TC_ACT_REDIRECT"
	}
	return fmt.Sprintf("TC_ACT(%d)", v)
}

// MinPacket is the shortest input BPF_PROG_TEST_RUN accepts for an skb
// program (ETH_HLEN): bpf_test_init refuses anything shorter with EINVAL,
// so a program's "shorter than an Ethernet header" branch cannot be driven
// through it. Kernel 6.18 also refuses (EINVAL) an IPv4-ethertype frame
// shorter than 34 bytes and an IPv6 one shorter than 54: a truncated
// IPv4/IPv6 header cannot be tested either. The upper bound is a page
// minus the skb's head- and tailroom (about 3.5 KiB).
const MinPacket = 14

// outPad is the room left in DataOut beyond the input's length. The kernel
// copies min(len(DataOut), skb->len) bytes and fails with ENOSPC when the
// packet grew past DataOut. Encapsulation grows a packet by at most 50
// bytes (VXLAN: outer IPv4, UDP, VXLAN, inner Ethernet).
const outPad = 256

// SkbCtx is struct __sk_buff (UAPI), passed as the context of a test run
// and read back after it. Of its fields only mark, priority,
// ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size and
// hwtstamp may be non-zero on the way in (convert___skb_to_skb). Ifindex
// selects skb->dev: it must exist in the namespace of the running thread
// (0 and 1 mean loopback). A non-zero GSOSize makes the skb a GSO packet
// with gso_type 0 (the kernel takes no type from the context).
type SkbCtx struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	TCIndex        uint32
	CB             [5]uint32
	Hash           uint32
	TCClassid      uint32
	Data           uint32
	DataEnd        uint32
	NapiID         uint32
	Family         uint32
	RemoteIP4      uint32
	LocalIP4       uint32
	RemoteIP6      [4]uint32
	LocalIP6       [4]uint32
	RemotePort     uint32
	LocalPort      uint32
	DataMeta       uint32
	FlowKeys       uint64
	Tstamp         uint64
	WireLen        uint32
	GSOSegs        uint32
	Sk             uint64
	GSOSize        uint32
	TstampType     uint8
	_              [3]uint8
	HWTstamp       uint64
}

// Input is one test run: a frame (from its Ethernet header on) and the
// interface it is seen on.
type Input struct {
	Data    []byte
	Ifindex int
	// Repeat runs the program this many times (0 = once) on the SAME skb:
	// whatever the program writes into the packet the next iteration
	// reads (a TTL is decremented once per iteration). Out and the verdict
	// are those of the last iteration.
	Repeat uint32
	// Mark is skb->mark on entry.
	Mark uint32
	// GSOSize, when non-zero, makes the skb a GSO packet (see SkbCtx).
	GSOSize uint32
}

// Result is what came out of a run.
type Result struct {
	Verdict uint32
	Out     []byte // the packet after the (last) run
	// Ctx is the context after the run (skb->mark and the like as the
	// program left them).
	Ctx SkbCtx
	// Interrupted counts how often a signal cut a Repeat > 1 run short
	// and cilium/ebpf started it again on a fresh skb: the program then
	// ran more than Repeat times in all (map side effects show it). A
	// single run is never interrupted.
	Interrupted int
}

func (in Input) ctx() *SkbCtx {
	return &SkbCtx{IngressIfindex: uint32(in.Ifindex), Ifindex: uint32(in.Ifindex), Mark: in.Mark, GSOSize: in.GSOSize}
}

// Run runs prog on in.Data as if it arrived on in.Ifindex, on the
// namespace's thread, through cilium/ebpf's Program.Run.
func (n *NetNS) Run(prog *ebpf.Program, in Input) (Result, error) {
	var res Result
	err := n.Do(func() error {
		var err error
		res, err = RunHere(prog, in)
		return err
	})
	return res, err
}

// RunHere is Run on the calling thread, which must be in the namespace
// (NetNS.Go): for runs on several CPUs at once.
func RunHere(prog *ebpf.Program, in Input) (Result, error) {
	var res Result
	opts := &ebpf.RunOptions{
		Data:       in.Data,
		DataOut:    make([]byte, len(in.Data)+outPad),
		Context:    in.ctx(),
		ContextOut: &res.Ctx,
		Repeat:     in.Repeat,
		Reset:      func() { res.Interrupted++ },
	}
	v, err := prog.Run(opts)
	if err != nil {
		return res, err
	}
	res.Verdict, res.Out = v, opts.DataOut
	return res, nil
}

// progRunAttr is the BPF_PROG_TEST_RUN part of union bpf_attr.
type progRunAttr struct {
	progFd      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// BenchResult is what Bench measured.
type BenchResult struct {
	Runs     int           // program runs
	Syscalls int           // BPF_PROG_TEST_RUN calls they took
	Kernel   time.Duration // sum over calls of the kernel's per-run time × runs
	// Verdicts counts the verdict of each call's last run.
	Verdicts map[uint32]int
	// Interrupted counts calls a signal cut short (EINTR) and that were
	// made again. Their runs are not in Runs or Kernel, but some of them
	// did happen: map side effects (counters) may exceed Runs by up to
	// Interrupted × Repeat.
	Interrupted int
}

// PerRun is the kernel-measured time of one run.
func (r BenchResult) PerRun() time.Duration {
	if r.Runs == 0 {
		return 0
	}
	return r.Kernel / time.Duration(r.Runs)
}

// Bench runs prog `runs` times on in.Data as seen on in.Ifindex, at most
// in.Repeat (0: 1) runs per BPF_PROG_TEST_RUN, all from the namespace's
// thread (one hand-off to it for the whole loop, not one per call).
//
// Its time is the kernel's: each call reports the time spent in its repeat
// loop divided by the repeat count (truncated to whole ns), which excludes
// the syscall, the skb allocation and the copies but includes the loop's
// own bookkeeping (an empty TC program measures that). The syscall is made
// here because ebpf.RunOptions has no way back for the duration and
// Program.Benchmark takes no context (so no ifindex).
func (n *NetNS) Bench(prog *ebpf.Program, in Input, runs int) (BenchResult, error) {
	res := BenchResult{Verdicts: map[uint32]int{}}
	if len(in.Data) == 0 {
		return res, errors.New("bpftest: empty input")
	}
	per := int(max(in.Repeat, 1))
	err := n.Do(func() error {
		ctx := in.ctx()
		defer runtime.KeepAlive(ctx)
		defer runtime.KeepAlive(in.Data)
		for res.Runs < runs {
			batch := min(per, runs-res.Runs)
			attr := progRunAttr{
				progFd:     uint32(prog.FD()),
				dataSizeIn: uint32(len(in.Data)),
				dataIn:     uint64(uintptr(unsafe.Pointer(&in.Data[0]))),
				repeat:     uint32(batch),
				ctxSizeIn:  uint32(unsafe.Sizeof(*ctx)),
				ctxIn:      uint64(uintptr(unsafe.Pointer(ctx))),
			}
			_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN,
				uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
			if errno == unix.EINTR {
				res.Interrupted++ // a signal cut the loop short: run the batch again
				continue
			}
			if errno != 0 {
				return fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
			}
			res.Runs += batch
			res.Syscalls++
			res.Kernel += time.Duration(attr.duration) * time.Duration(batch)
			res.Verdicts[attr.retval]++
		}
		return nil
	})
	return res, err
}
