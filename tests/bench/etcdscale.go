package bench

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/lab"
)

// The etcd section (issue 6's scale figures): one agent following an etcd
// that holds many nodes, each with an IPAM block and its endpoints in it.
// The agent routes each remote node's block, not each endpoint.

// Case IDs of the etcd section.
const (
	caseEtcdStart          = "etcd.start"
	caseEtcdChangeEndpoint = "etcd.change.endpoint"
	caseEtcdChangeBlock    = "etcd.change.block"
	caseEtcdRSS            = "etcd.rss"
	caseEtcdAllocMs        = "etcd.alloc.ms"
	caseEtcdAllocShare     = "etcd.alloc.share"
)

// etcdAllocations are the concurrent `ipam allocate` calls made on the
// populated etcd, over etcdAllocNodes new nodes.
const (
	etcdAllocations = 100
	etcdAllocNodes  = 10
)

// The goals of issue 16, judged at the full size only.
const (
	etcdGoalStartMs  = 3000
	etcdGoalChangeMs = 100
	etcdGoalShare    = 1 // % of the model one allocation may read
)

// etcdParams size one etcd run.
type etcdParams struct {
	// nodes other than the agent's, each holding one block with perNode
	// endpoints; local endpoints on the agent's node (with veths).
	nodes, perNode, local int
	// starts of the agent on empty maps; changes of each kind timed on
	// the last one.
	starts, changes int
}

func etcdParamsFor(quick bool) etcdParams {
	if quick {
		return etcdParams{nodes: 100, perNode: 50, local: 10, starts: 1, changes: 10}
	}
	return etcdParams{nodes: 1000, perNode: 50, local: 50, starts: 3, changes: 50}
}

// etcdTxnOps is how many operations one populate transaction holds: below
// etcd's default --max-txn-ops (128), which the lab's etcd keeps.
const etcdTxnOps = 120

// The model's addresses.
var (
	// etcdPoolCIDR is the workload pool; blocks are carved from its start.
	etcdPoolCIDR = netip.MustParsePrefix("10.64.0.0/10")
	// etcdBlockSize is the pool's blockSize: 64 addresses per block.
	etcdBlockSize = 26
	// etcdExtraBase is where the endpoints added outside any block get
	// their addresses (inside the pool, far from every block).
	etcdExtraBase = netip.MustParseAddr("10.100.0.0")
	// etcdClaimBlock is the index of the first block claimed by a change.
	etcdClaimBlock = 4096
)

// etcdLocalUnderlay is the agent's host's underlay address (the lab's
// first host on its default segment).
const etcdLocalUnderlay = "10.30.0.11/24"

func etcdSection(quick bool) *Section {
	p := etcdParamsFor(quick)
	eps := fmtCount(p.nodes * p.perNode)
	mdl := fmt.Sprintf("%s nodes and %s endpoints", fmtCount(p.nodes), eps)
	ms := func(id, label string) Case { return Case{ID: id, Label: label, Unit: "ms", Better: LowerIsBetter} }
	start := ms(caseEtcdStart, fmt.Sprintf("first full sync of %s in etcd (agent start → its first sync of the populated revision)", mdl))
	epChange := ms(caseEtcdChangeEndpoint, "an endpoint added on a remote node, outside its block (etcd write → the agent's sync done, its /32 in cx_routes)")
	epChange.Percentiles = true
	blockChange := ms(caseEtcdChangeBlock, "a block claimed by a remote node (etcd write → the agent's sync done, the block's route in cx_routes)")
	blockChange.Percentiles = true
	rss := Case{ID: caseEtcdRSS, Label: fmt.Sprintf("agent RSS after its first sync of %s", mdl), Unit: "MiB", Better: LowerIsBetter}
	start.Goal = &Goal{Issue: "issue 16", Text: fmt.Sprintf("first sync of 1,000 nodes and 50,000 endpoints ≤ %d ms", etcdGoalStartMs), MaxValue: etcdGoalStartMs}
	for _, c := range []*Case{&epChange, &blockChange} {
		c.Goal = &Goal{Issue: "issue 16", Text: fmt.Sprintf("one change in etcd: p99 ≤ %d ms", etcdGoalChangeMs), MaxValue: etcdGoalChangeMs, Stat: "p99"}
	}
	alloc := ms(caseEtcdAllocMs, fmt.Sprintf("one of %d concurrent `ipam allocate` calls over %d nodes (each its own etcd client)", etcdAllocations, etcdAllocNodes))
	alloc.Percentiles = true
	share := Case{ID: caseEtcdAllocShare, Label: "what one of those allocations reads from etcd, as a share of the whole model", Unit: "%", Better: LowerIsBetter, Percentiles: true,
		Goal: &Goal{Issue: "issue 16", Text: fmt.Sprintf("an allocation reads O(1 block), not the model: p99 ≤ %d %% of it", etcdGoalShare), MaxValue: etcdGoalShare, Stat: "p99"}}
	s := &Section{
		Key:   "etcd",
		Title: fmt.Sprintf("Scale: one agent following an etcd of %s", mdl),
		Tables: []Table{
			{Title: "From an empty start",
				Note:  fmt.Sprintf("%s nodes, each with one IPAM block (/%d) holding its %d endpoints, and the agent's own node with %d endpoints on veths. There is no kernel counterpart: these figures have no ratio.", fmtCount(p.nodes), etcdBlockSize, p.perNode, p.local),
				Cases: []Case{start},
				Extras: []Extra{
					{Detail: "startedMs", Header: "of which to \"agent started\" ms (median)", Stat: "median", Format: "%.0f"},
					{Detail: "reconcileMs", Header: "of which the first reconcile ms (median)", Stat: "median", Format: "%.0f"},
					{Detail: "mapWrites", Header: "map writes", Stat: "max", Format: "%.0f"},
					{Detail: "routes", Header: "cx_routes entries", Stat: "max", Format: "%.0f"},
					{Detail: "blockRoutes", Header: "of which block routes", Stat: "max", Format: "%.0f"},
					{Detail: "remote32", Header: "remote /32 routes", Stat: "max", Format: "%.0f"},
				}},
			{Title: fmt.Sprintf("One change in etcd at %s", mdl),
				Note:  "p50 and p99 over every change made; each change is one etcd transaction.",
				Cases: []Case{epChange, blockChange},
				Extras: []Extra{
					{Detail: extraP99, Header: "p99 ms", Format: "%.1f"},
					{Detail: "commitMs", Header: "of which the etcd commit ms (median)", Stat: "median", Format: "%.1f"},
					{Detail: "reconcileMs", Header: "of which the reconcile ms (median)", Stat: "median", Format: "%.1f"},
				}},
			{Title: fmt.Sprintf("%d concurrent IPAM allocations at %s", etcdAllocations, mdl),
				Note:  "Each allocation gets an address in a block of its node (claiming one when the node has none); no address is handed out twice.",
				Cases: []Case{alloc, share},
				Extras: []Extra{
					{Detail: extraP99, Header: "p99", Format: "%.2f"},
					{Detail: "bytes", Header: "bytes read (median)", Stat: "median", Format: "%.0f"},
					{Detail: "modelBytes", Header: "the whole model, bytes", Stat: "max", Format: "%.0f"},
					{Detail: "totalMs", Header: "all of them, ms", Stat: "max", Format: "%.0f"},
				}},
			{Title: "Agent memory", Cases: []Case{rss},
				Extras: []Extra{{Detail: "peakMiB", Header: "peak RSS MiB (VmHWM, max)", Stat: "max", Format: "%.1f"}}},
		},
	}
	s.Run = func(ctx context.Context, o *Options, rec *Recorder) error {
		if _, err := os.Stat(lab.EtcdBinary); err != nil {
			if os.Getenv("CI") != "" {
				return fmt.Errorf("etcd is not installed (make deps): %w", err)
			}
			return skip(fmt.Sprintf("etcd is not installed at %s (make deps installs etcd-server)", lab.EtcdBinary))
		}
		rec.Param("etcd.nodes", p.nodes)
		rec.Param("etcd.endpointsPerNode", p.perNode)
		rec.Param("etcd.local", p.local)
		rec.Param("etcd.starts", p.starts)
		rec.Param("etcd.changes", p.changes)
		rec.Param("etcd.txnOps", etcdTxnOps)
		rec.logf("etcd: %d nodes × %d endpoints, %d local, %d cold starts, %d changes of each kind", p.nodes, p.perNode, p.local, p.starts, p.changes)
		if quick {
			s.notJudged(rec, "quick pass: the goals are set at 1,000 nodes and 50,000 endpoints")
		}
		return EtcdScale(ctx, o.BinDir, p, rec)
	}
	s.Method = etcdMethod
	return s
}

// etcdMethod explains the section.
func etcdMethod(rec *Recorder) string {
	var b strings.Builder
	nodes, per, local := rec.ParamInt("etcd.nodes"), rec.ParamInt("etcd.endpointsPerNode"), rec.ParamInt("etcd.local")
	fmt.Fprintf(&b, "A lab with one host namespace (the agent's node, underlay %s) and the lab's etcd (Debian's `/usr/bin/etcd` %s, one member with its defaults, its data under /run/calyx-lab) in its own namespace on the same segment; the agent runs with `--datastore etcd://` that etcd's underlay address, so its datastore traffic crosses the underlay its programs are attached to. ",
		etcdLocalUnderlay, paramString(rec, "etcd.version"))
	fmt.Fprintf(&b, "The bench fills etcd before the agent starts, with etcd's own client (dialled into etcd's namespace): one IPPool (%s, blockSize %d, IP-in-IP Always), %s Nodes with underlay addresses in 10.40.0.0/16, one IPAMBlock per node (`model.BlockName`, its allocations naming the endpoints) and %d WorkloadEndpoints per node inside its block (%s endpoints), plus the agent's own Node with its block and %d endpoints whose interfaces are veths in its namespace. ",
		etcdPoolCIDR, etcdBlockSize, fmtCount(nodes), per, fmtCount(nodes*per), local)
	fmt.Fprintf(&b, "Every resource is defaulted and validated by `model` (each on its own, then the whole model) and written as calyx's etcd store writes it (its JSON under `/calyx/resources/<kind>/<name>`, and a block's entry in the per-node block index `/calyx/affinity/<node>/<block>`), %d keys per transaction to stay under etcd's `--max-txn-ops`; ", rec.ParamInt("etcd.txnOps"))
	if ms := rec.ParamInt("etcd.populateMs"); ms > 0 {
		fmt.Fprintf(&b, "writing the %s keys (%.1f MiB of values) took %.1f s (not a figure). ", fmtCount(rec.ParamInt("etcd.populateKeys")), float64(rec.ParamInt("etcd.populateKiB"))/1024, float64(ms)/1000)
	}
	b.WriteString("\n\n")
	fmt.Fprintf(&b, "- **First full sync**: the agent is started %s on empty maps (a fresh bpffs directory each time), timed from its start to its first `synced` log line whose datastore revision covers the last populate write (the agent read every key, parsed it, computed the whole dataplane and wrote every map). Two columns split it: the time to the agent's `agent started` line (its programs and maps loaded — the Config read alone, for the maps' sizes — while the watch reads and parses every key, its Node found registered) and what the first `synced` line says its reconcile took (compute the dataplane, write the maps, attach the programs to the underlay and the local veths — about 25 ms each, which the kernel serialises under its RTNL lock — add the local kernel routes). ", times(rec.ParamInt("etcd.starts")))
	fmt.Fprintf(&b, "**Proof of the path**, every start: cx_routes is read back from the pinned map and must hold one block route per remote node (RemoteWorkload /%d via that node), one node route per node, no remote /32 at all (the %s remote endpoints are covered by their blocks; a sample endpoint's longest-prefix match is its block's route), the pool route and the %d local endpoints' routes, and cx_ifaces the %d local workload interfaces. RSS (VmRSS) is read right after that first sync; the peak (VmHWM) is the most the agent held up to then.\n",
		etcdBlockSize, fmtCount(nodes*per), local, local)
	fmt.Fprintf(&b, "- **One change**: on the last agent, %d changes of each kind in turn, each one etcd transaction written with etcd's client as calyx's store writes (the resource's key, and a block's index entry): an endpoint added on a remote node with an address outside every block (a /32 RemoteWorkload route via that node must appear), and an empty block claimed by a remote node (its /%d route via that node must appear). ",
		rec.ParamInt("etcd.changes"), etcdBlockSize)
	fmt.Fprintf(&b, "Each is timed from just before the transaction is sent to the agent's `synced` line whose revision is at least the transaction's, and the route is then looked up in the pinned map; the time includes the etcd commit and the store watch's 2 ms debounce. After the last change cx_routes is counted again (one /32 per added endpoint, one more block route per claim) and the whole model, changes included, must still validate.\n")
	fmt.Fprintf(&b, "- **Concurrent allocations**: %d new Nodes are written through calyx's store, then %d `ipam.Allocate` calls (what `calyxctl ipam allocate` does) start at once, %d per node, each through its own etcd store client opened beforehand (as separate calyxctl or agent processes would have); each is timed, and what its client read from etcd (keys and values, `EtcdStore.BytesRead`) is compared with what one read of the whole model reads. Every call must return an address, and no address may come twice.\n",
		etcdAllocNodes, etcdAllocations, etcdAllocations/etcdAllocNodes)
	if nodes < 1000 {
		fmt.Fprintf(&b, "\nThis was a quick pass: %s nodes instead of 1,000 (%s endpoints instead of 50,000), fewer starts and changes.\n", fmtCount(nodes), fmtCount(nodes*per))
	}
	return b.String()
}

// paramString returns a string parameter ("" when unset).
func paramString(rec *Recorder, key string) string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s, _ := rec.params[key].(string)
	return s
}

// ---- the model ----

func addU32(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], binary.BigEndian.Uint32(b[:])+n)
	return netip.AddrFrom4(out)
}

func etcdNodeName(i int) string { return fmt.Sprintf("node-%04d", i) }

// etcdNodeAddr is node i's underlay address, in 10.40.0.0/16.
func etcdNodeAddr(i int) netip.Prefix {
	return netip.PrefixFrom(addU32(netip.MustParseAddr("10.40.0.0"), uint32(i+1)), 16)
}

// etcdBlock is block number i of the pool.
func etcdBlock(i int) netip.Prefix {
	return netip.PrefixFrom(addU32(etcdPoolCIDR.Addr(), uint32(i)<<(32-etcdBlockSize)), etcdBlockSize)
}

func etcdBlockOf(cidr netip.Prefix, node string, allocs map[netip.Addr]string) *model.IPAMBlock {
	return &model.IPAMBlock{Metadata: model.Metadata{Name: model.BlockName(cidr)},
		Spec: model.IPAMBlockSpec{CIDR: cidr, Pool: "bench", Node: node, Allocations: allocs}}
}

func etcdEndpoint(name, node, iface string, a netip.Addr) *model.WorkloadEndpoint {
	return &model.WorkloadEndpoint{Metadata: model.Metadata{Name: name},
		Spec: model.WorkloadEndpointSpec{Node: node, Interface: iface, IPNetworks: []netip.Prefix{netip.PrefixFrom(a, 32)}}}
}

// etcdLocalIface is the host-side veth of local endpoint k.
func etcdLocalIface(k int) string { return fmt.Sprintf("cxl%d", k) }

// etcdModel is the populated model: the pool, every node with its block
// and endpoints, and the agent's own node ("local", block number nodes).
func etcdModel(p etcdParams) []model.Resource {
	rs := []model.Resource{
		&model.IPPool{Metadata: model.Metadata{Name: "bench"}, Spec: model.IPPoolSpec{CIDR: etcdPoolCIDR, BlockSize: etcdBlockSize, IPIPMode: model.EncapAlways, NodeSelector: "all()"}},
		&model.Node{Metadata: model.Metadata{Name: "local"}, Spec: model.NodeSpec{IPv4Address: netip.MustParsePrefix(etcdLocalUnderlay)}},
	}
	for i := range p.nodes + 1 {
		node, n, iface := etcdNodeName(i), p.perNode, func(j int) string { return fmt.Sprintf("tap%04d%02d", i, j) }
		if i == p.nodes {
			node, n, iface = "local", p.local, etcdLocalIface
		} else {
			rs = append(rs, &model.Node{Metadata: model.Metadata{Name: node}, Spec: model.NodeSpec{IPv4Address: etcdNodeAddr(i)}})
		}
		blk := etcdBlock(i)
		allocs := make(map[netip.Addr]string, n)
		for j := range n {
			name := fmt.Sprintf("wl-%04d-%02d", i, j)
			if i == p.nodes {
				name = fmt.Sprintf("local-%02d", j)
			}
			a := addU32(blk.Addr(), uint32(j+1))
			allocs[a] = name
			rs = append(rs, etcdEndpoint(name, node, iface(j), a))
		}
		rs = append(rs, etcdBlockOf(blk, node, allocs))
	}
	return rs
}

// etcdChangeNode picks the remote node of change k of a kind.
func etcdChangeNode(p etcdParams, k, salt int) int { return (k*37 + salt) % p.nodes }

// etcdExtraEndpoint is change k's endpoint: on a remote node, with an
// address in no block.
func etcdExtraEndpoint(p etcdParams, k int) (*model.WorkloadEndpoint, int) {
	i := etcdChangeNode(p, k, 0)
	return etcdEndpoint(fmt.Sprintf("extra-%03d", k), etcdNodeName(i), fmt.Sprintf("tapx%03d", k), addU32(etcdExtraBase, uint32(k+1))), i
}

// etcdClaim is change k's block: an empty one claimed by a remote node.
func etcdClaim(p etcdParams, k int) (*model.IPAMBlock, int) {
	i := etcdChangeNode(p, k, 11)
	return etcdBlockOf(etcdBlock(etcdClaimBlock+k), etcdNodeName(i), nil), i
}

// ---- etcd ----

// etcdKey is where calyx's etcd store keeps r (model.DefaultEtcdPrefix).
func etcdKey(r model.Resource) string {
	return model.DefaultEtcdPrefix + "/resources/" + strings.ToLower(r.Kind()) + "/" + r.Meta().Name
}

// etcdOps defaults and validates rs as the store's Apply does and returns
// their puts, and the bytes of the values.
func etcdOps(rs []model.Resource) ([]clientv3.Op, int, error) {
	ops := make([]clientv3.Op, 0, len(rs))
	size := 0
	for _, r := range rs {
		model.ApplyDefaults(r)
		if err := model.Validate(r); err != nil {
			return nil, 0, err
		}
		v, err := json.Marshal(r)
		if err != nil {
			return nil, 0, err
		}
		size += len(v)
		ops = append(ops, clientv3.OpPut(etcdKey(r), string(v)))
		if b, ok := r.(*model.IPAMBlock); ok {
			// The store's per-node block index, as its writes keep it.
			ops = append(ops, clientv3.OpPut(model.DefaultEtcdPrefix+"/affinity/"+b.Spec.Node+"/"+b.Metadata.Name, ""))
		}
	}
	return ops, size, nil
}

// etcdCommit commits ops in one transaction and returns its revision.
func etcdCommit(ctx context.Context, cli *clientv3.Client, ops []clientv3.Op) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cli.Txn(rctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("etcd txn: %w", err)
	}
	return resp.Header.Revision, nil
}

// etcdClient is etcd's client dialled into etcd's namespace (the root
// namespace has no route into the lab).
func etcdClient(e *lab.Etcd) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:          []string{"http://" + netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), lab.EtcdClientPort).String()},
		DialTimeout:        10 * time.Second,
		MaxCallSendMsgSize: 64 << 20,
		Logger:             zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return lab.DialTCP(e.NS, addr, 5*time.Second)
		})},
	})
}

// etcdVersion is the first line of `etcd --version`'s version.
func etcdVersion() string {
	out, err := exec.Command(lab.EtcdBinary, "--version").Output()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "etcd Version: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// ---- the run ----

// EtcdScale measures one agent following an etcd of p's size (see
// etcdMethod).
func EtcdScale(ctx context.Context, binDir string, p etcdParams, rec *Recorder) (err error) {
	rec.Param("etcd.version", etcdVersion())
	l, err := lab.New(lab.Options{BinDir: binDir, Context: ctx})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	rec.logf("etcd lab %s (state in %s)", l.Prefix, l.Dir)
	h, err := l.AddHost("local", etcdLocalUnderlay)
	if err != nil {
		return err
	}
	e, err := l.AddEtcd(lab.EtcdOptions{})
	if err != nil {
		return err
	}
	cli, err := etcdClient(e)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := etcdVeths(l, h, p.local); err != nil {
		return err
	}

	// Populate.
	rs := etcdModel(p)
	snap := model.NewSnapshot()
	t0 := time.Now()
	ops, size, err := etcdOps(rs)
	if err != nil {
		return fmt.Errorf("the model: %w", err)
	}
	for _, r := range rs {
		snap.Put(r)
	}
	if err := snap.Validate(); err != nil {
		return fmt.Errorf("the model: %w", err)
	}
	tBuilt := time.Now()
	var rev int64
	for i := 0; i < len(ops); i += etcdTxnOps - 1 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rev, err = etcdCommit(ctx, cli, ops[i:min(i+etcdTxnOps-1, len(ops))]); err != nil {
			return fmt.Errorf("populate: %w", err)
		}
	}
	populate := time.Since(tBuilt)
	rec.Param("etcd.populateMs", int(populate.Milliseconds()))
	rec.Param("etcd.populateKeys", len(ops))
	rec.Param("etcd.populateKiB", size/1024)
	rec.logf("etcd: %d keys (%.1f MiB) built and validated in %s, written in %s (revision %d)", len(ops), float64(size)/(1<<20), tBuilt.Sub(t0).Round(time.Millisecond), populate.Round(time.Millisecond), rev)

	var a *cpAgent
	var m *bpfmap.Maps
	defer func() {
		if a != nil {
			a.stop()
		}
		if m != nil {
			m.Close()
		}
	}()
	prevDir := ""
	for s := range p.starts {
		if err := ctx.Err(); err != nil {
			return err
		}
		if a != nil {
			a.stop()
			a = nil
			m.Close()
			m = nil
			os.RemoveAll(prevDir) // unpins: the programs detach
		}
		dir := filepath.Join(l.BPFFS, fmt.Sprintf("start%d", s))
		prevDir = dir
		t0 := time.Now()
		if a, err = startCPAgent(ctx, binDir, h.NS, e.URL(), dir); err != nil {
			return err
		}
		sy, err := a.waitSync(uint64(rev), 300*time.Second)
		if err != nil {
			return fmt.Errorf("start %d: %w", s+1, err)
		}
		first := sy.at.Sub(t0)
		pid := a.cmd.Process.Pid
		rss, peak := float64(procStatusKiB(pid, "VmRSS"))/1024, float64(procStatusKiB(pid, "VmHWM"))/1024
		if m, err = waitForMaps(dir, 10*time.Second); err != nil {
			return err
		}
		rc, err := checkEtcdRoutes(m, p, 0, 0)
		if err != nil {
			return fmt.Errorf("start %d: %w", s+1, err)
		}
		rec.Add(caseEtcdStart, s, msOf(first))
		if st := a.startedAt(); !st.IsZero() {
			rec.Detail(caseEtcdStart, "startedMs", msOf(st.Sub(t0)))
		}
		rec.Detail(caseEtcdStart, "reconcileMs", msOf(sy.took))
		rec.Detail(caseEtcdStart, "mapWrites", float64(sy.writes))
		rec.Detail(caseEtcdStart, "routes", float64(rc.total))
		rec.Detail(caseEtcdStart, "blockRoutes", float64(rc.blocks))
		rec.Detail(caseEtcdStart, "remote32", float64(rc.remote32))
		rec.Add(caseEtcdRSS, s, rss)
		rec.Detail(caseEtcdRSS, "peakMiB", peak)
		rec.logf("etcd: start %d: first full sync in %s (\"agent started\" after %s, first reconcile %s, %d map writes), cx_routes %s, RSS %.1f MiB (peak %.1f)",
			s+1, first.Round(time.Millisecond), a.startedAt().Sub(t0).Round(time.Millisecond), sy.took.Round(time.Millisecond), sy.writes, rc, rss, peak)
	}

	var epLat, blkLat []time.Duration
	for k := range p.changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		ep, i := etcdExtraEndpoint(p, k)
		d, err := etcdChange(ctx, cli, a, m, rec, caseEtcdChangeEndpoint, k, ep, ep.Spec.IPNetworks[0], etcdNodeAddr(i).Addr(), &rev)
		if err != nil {
			return fmt.Errorf("endpoint change %d: %w", k+1, err)
		}
		epLat = append(epLat, d)
		snap.Put(ep)
		blk, i := etcdClaim(p, k)
		if d, err = etcdChange(ctx, cli, a, m, rec, caseEtcdChangeBlock, k, blk, blk.Spec.CIDR, etcdNodeAddr(i).Addr(), &rev); err != nil {
			return fmt.Errorf("block change %d: %w", k+1, err)
		}
		blkLat = append(blkLat, d)
		snap.Put(blk)
	}
	if p.changes > 0 {
		rc, err := checkEtcdRoutes(m, p, p.changes, p.changes)
		if err != nil {
			return fmt.Errorf("after the changes: %w", err)
		}
		if err := snap.Validate(); err != nil {
			return fmt.Errorf("the model with the changes: %w", err)
		}
		rec.logf("etcd: an endpoint added: p50 %s, p99 %s; a block claimed: p50 %s, p99 %s; cx_routes %s",
			Percentile(epLat, 50).Round(10*time.Microsecond), Percentile(epLat, 99).Round(10*time.Microsecond),
			Percentile(blkLat, 50).Round(10*time.Microsecond), Percentile(blkLat, 99).Round(10*time.Microsecond), rc)
	}
	return etcdAllocate(ctx, e, rec)
}

// etcdAllocate makes etcdAllocations concurrent allocations over
// etcdAllocNodes new nodes, each through its own store (as separate
// calyxctl or agent processes would), and records each one's time and
// what it read from etcd.
func etcdAllocate(ctx context.Context, e *lab.Etcd, rec *Recorder) error {
	open := func() (*model.EtcdStore, error) {
		ds, err := model.Open(e.URL(), model.WithLogger(slog.New(slog.DiscardHandler)),
			model.WithEtcdDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return lab.DialTCP(e.NS, addr, 5*time.Second)
			}))
		if err != nil {
			return nil, err
		}
		return ds.(*model.EtcdStore), nil
	}
	admin, err := open()
	if err != nil {
		return err
	}
	defer admin.Close()
	var nodes []model.Resource
	for i := range etcdAllocNodes {
		nodes = append(nodes, &model.Node{Metadata: model.Metadata{Name: fmt.Sprintf("alloc-%02d", i)},
			Spec: model.NodeSpec{IPv4Address: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 41, 0, byte(i + 1)}), 16)}})
	}
	if err := admin.Apply(ctx, nodes); err != nil {
		return fmt.Errorf("the allocating nodes: %w", err)
	}
	before := admin.BytesRead()
	if _, err := admin.Snapshot(ctx); err != nil {
		return err
	}
	modelBytes := float64(admin.BytesRead() - before)
	stores := make([]*model.EtcdStore, etcdAllocations)
	for g := range stores {
		if stores[g], err = open(); err != nil {
			return err
		}
		defer stores[g].Close()
	}
	got := make([]netip.Addr, etcdAllocations)
	took := make([]time.Duration, etcdAllocations)
	read := make([]uint64, etcdAllocations)
	errs := make([]error, etcdAllocations)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for g := range etcdAllocations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-begin
			r0, t0 := stores[g].BytesRead(), time.Now()
			got[g], errs[g] = ipam.Allocate(ctx, stores[g], fmt.Sprintf("alloc-%02d", g%etcdAllocNodes), fmt.Sprintf("bench-%03d", g))
			took[g], read[g] = time.Since(t0), stores[g].BytesRead()-r0
		}()
	}
	t0 := time.Now()
	close(begin)
	wg.Wait()
	total := time.Since(t0)
	seen := map[netip.Addr]int{}
	for g := range etcdAllocations {
		if errs[g] != nil {
			return fmt.Errorf("allocation %d: %w", g, errs[g])
		}
		if h, dup := seen[got[g]]; dup {
			return fmt.Errorf("allocations %d and %d both got %s", h, g, got[g])
		}
		seen[got[g]] = g
		rec.Add(caseEtcdAllocMs, g, msOf(took[g]))
		rec.Add(caseEtcdAllocShare, g, 100*float64(read[g])/modelBytes)
		rec.Detail(caseEtcdAllocShare, "bytes", float64(read[g]))
	}
	rec.Detail(caseEtcdAllocShare, "modelBytes", modelBytes)
	rec.Detail(caseEtcdAllocMs, "totalMs", msOf(total))
	slices.Sort(read)
	rec.logf("etcd: %d concurrent allocations in %s, no address twice; each read %d-%d bytes (median %d) of a %.0f-byte model",
		etcdAllocations, total.Round(time.Millisecond), read[0], read[len(read)-1], read[len(read)/2], modelBytes)
	return nil
}

// etcdChange writes r in one transaction and times it to the agent's sync
// of that revision; want must then route to nextHop as a remote workload.
func etcdChange(ctx context.Context, cli *clientv3.Client, a *cpAgent, m *bpfmap.Maps, rec *Recorder, id string, k int, r model.Resource, want netip.Prefix, nextHop netip.Addr, rev *int64) (time.Duration, error) {
	ops, _, err := etcdOps([]model.Resource{r})
	if err != nil {
		return 0, err
	}
	if rt, ok, err := m.LookupRoute(want.Addr()); err != nil {
		return 0, err
	} else if ok && rt.Type == bpfmap.RouteRemoteWorkload {
		return 0, fmt.Errorf("%s is routed to a remote workload before the change: %+v", want, rt)
	}
	t0 := time.Now()
	n, err := etcdCommit(ctx, cli, ops)
	if err != nil {
		return 0, err
	}
	commit := time.Since(t0)
	*rev = n
	sy, err := a.waitSync(uint64(n), 30*time.Second)
	if err != nil {
		return 0, err
	}
	d := sy.at.Sub(t0)
	routes, err := m.Routes.All()
	if err != nil {
		return 0, err
	}
	rt, ok := routes[want]
	if !ok || rt.Type != bpfmap.RouteRemoteWorkload || rt.NextHop != nextHop {
		return 0, fmt.Errorf("after the agent's sync of revision %d cx_routes[%s] is %+v (present %v), want a remote workload route via %s", sy.rev, want, rt, ok, nextHop)
	}
	rec.Add(id, k, msOf(d))
	rec.Detail(id, "commitMs", msOf(commit))
	rec.Detail(id, "reconcileMs", msOf(sy.took))
	return d, nil
}

// etcdVeths makes n veth pairs in the host's namespace, both ends up: the
// interfaces of the local endpoints.
func etcdVeths(l *lab.Lab, h *lab.Host, n int) error {
	var b strings.Builder
	for k := range n {
		fmt.Fprintf(&b, "link add %s type veth peer name %sp\nlink set %s up\nlink set %sp up\n", etcdLocalIface(k), etcdLocalIface(k), etcdLocalIface(k), etcdLocalIface(k))
	}
	res, err := l.Run(lab.Command{NS: h.NS, Args: []string{"ip", "-batch", "-"}, Stdin: b.String(), Timeout: time.Minute})
	if err != nil {
		return fmt.Errorf("local veths: %w: %s", err, res.Stderr)
	}
	return nil
}

// etcdRouteCount is cx_routes by kind.
type etcdRouteCount struct {
	total, blocks, nodes, remote32, local, pool, host, other int
}

func (c etcdRouteCount) String() string {
	return fmt.Sprintf("%d entries: %d block, %d node, %d remote /32, %d local, %d pool, %d host, %d other",
		c.total, c.blocks, c.nodes, c.remote32, c.local, c.pool, c.host, c.other)
}

// checkEtcdRoutes counts cx_routes and fails unless it holds what the
// model asks for with extras endpoints added outside blocks and claims
// blocks claimed: a block route per remote block, a node route per node,
// no remote /32 but the extras', the pool and the local endpoints; and a
// sample remote endpoint resolves to its block's route. cx_ifaces must hold
// the local endpoints.
func checkEtcdRoutes(m *bpfmap.Maps, p etcdParams, extras, claims int) (etcdRouteCount, error) {
	var c etcdRouteCount
	routes, err := m.Routes.All()
	if err != nil {
		return c, err
	}
	for pfx, r := range routes {
		c.total++
		switch {
		case r.Type == bpfmap.RouteRemoteWorkload && pfx.Bits() == etcdBlockSize:
			c.blocks++
		case r.Type == bpfmap.RouteRemoteWorkload && pfx.Bits() == 32:
			c.remote32++
		case r.Type == bpfmap.RouteNode:
			c.nodes++
		case r.Type == bpfmap.RouteLocalWorkload:
			c.local++
		case r.Type == bpfmap.RoutePool:
			c.pool++
		case r.Type == bpfmap.RouteHost:
			c.host++
		default:
			c.other++
		}
	}
	want := etcdRouteCount{blocks: p.nodes + claims, nodes: p.nodes, remote32: extras, local: p.local, pool: 1, host: 1}
	want.total = want.blocks + want.nodes + want.remote32 + want.local + want.pool + want.host
	if c != want {
		return c, fmt.Errorf("cx_routes holds %s; want %s", c, want)
	}
	i, j := p.nodes/2, p.perNode/2
	a := addU32(etcdBlock(i).Addr(), uint32(j+1))
	r, ok, err := m.LookupRoute(a)
	if err != nil {
		return c, err
	}
	if !ok || r.Type != bpfmap.RouteRemoteWorkload || r.NextHop != etcdNodeAddr(i).Addr() {
		return c, fmt.Errorf("endpoint %s of %s resolves to %+v (found %v), want its block's route via %s", a, etcdNodeName(i), r, ok, etcdNodeAddr(i).Addr())
	}
	ifs, err := m.Ifaces.All()
	if err != nil {
		return c, err
	}
	wl := 0
	for _, v := range ifs {
		if v.Workload {
			wl++
		}
	}
	if wl != p.local {
		return c, fmt.Errorf("cx_ifaces holds %d workload interfaces, want the %d local endpoints'", wl, p.local)
	}
	return c, nil
}

// procStatusKiB reads a kB field of /proc/PID/status ("VmRSS", "VmHWM").
func procStatusKiB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	return 0
}
