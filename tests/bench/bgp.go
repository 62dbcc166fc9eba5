package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// The BGP comparison (issue 14): how fast a node's routes reach the data
// center's gateway, a BIRD 2 router, when they change. calyx's agent embeds
// a GoBGP speaker driven by the model; Calico runs BIRD 2 on every node as
// its speaker. Both speakers run in the same lab, each on its own host, each
// with a session to the same gateway BIRD and to nothing else: host-a runs
// calyx-agent (its BGPPeer is the gateway), host-b runs no agent and BIRD 2
// instead, announcing static /32s as a node's BIRD announces its workloads.
// A change is made on one side at a time and the gateway is polled until it
// holds the routes with the speaker's host as next hop.

const (
	// bgpRoutes is the size of the big change.
	bgpRoutes = 1000
	// bgpPoll is the pause between two polls of the gateway.
	bgpPoll = 20 * time.Millisecond
	// bgpEndpointPool is the pool of the calyx side's endpoints: no IPAM
	// block in it, so each endpoint is advertised as a /32.
	bgpEndpointPool = "bgp-bench"
)

// The address ranges of the two sides: calyx's endpoints in one, BIRD's
// static routes in the other, so that neither ever counts the other's.
var (
	bgpCalyxRange = netip.MustParsePrefix("10.66.0.0/16")
	bgpBIRDRange  = netip.MustParsePrefix("10.67.0.0/16")
)

// bgpSpeakers are the two node speakers, calyx first; BIRD is the baseline.
var bgpSpeakers = []struct{ key, label string }{
	{"calyx", "calyx-agent's embedded GoBGP (model change → gateway)"},
	{"bird", "BIRD 2 as the node's speaker (Calico's way)"},
}

// bgpMetrics are the two changes.
var bgpMetrics = []struct{ key, title string }{
	{"announce1000", "1,000 new /32 routes at once, until the gateway has them all"},
	{"move1", "One new /32 route, until the gateway has it"},
}

// Details recorded per sample.
const (
	// bgpDetailChange is how long the change call itself took (calyxctl
	// apply, or bird -p and birdc configure).
	bgpDetailChange = "changeMs"
	// bgpDetailAfter is the figure less the change call: how long after
	// the call returned the last route arrived (0 when before).
	bgpDetailAfter = "afterChangeMs"
	// bgpDetailSeen is when the first poll that showed the whole change
	// came back (the figure itself is from the gateway's route times).
	bgpDetailSeen = "seenMs"
	// bgpDetailWithdraw is the time from undoing the change until the
	// gateway has none of the routes.
	bgpDetailWithdraw = "withdrawMs"
)

// BGPCaseID is the ID of a BGP case ("bgp.announce1000.calyx").
func BGPCaseID(metric, speaker string) string { return "bgp." + metric + "." + speaker }

// bgpParams size one BGP run.
type bgpParams struct {
	announceRounds, moveRounds int
}

func bgpParamsFor(quick bool) bgpParams {
	if quick {
		return bgpParams{announceRounds: 2, moveRounds: 3}
	}
	return bgpParams{announceRounds: 5, moveRounds: 10}
}

func bgpSection() *Section {
	s := &Section{Key: "bgp", Title: "BGP convergence: calyx's embedded GoBGP vs BIRD 2 as the node's speaker"}
	for _, m := range bgpMetrics {
		t := Table{
			Title: m.title,
			Note:  "The baseline here is not the kernel: it is BIRD 2 as the node's BGP speaker, as Calico runs it. Extra columns: medians of the change call alone, of what came after it returned, and of the withdrawal that follows each round.",
			Extras: []Extra{
				{Detail: bgpDetailChange, Header: "of which the change call", Stat: "median", Format: "%.0f ms"},
				{Detail: bgpDetailAfter, Header: "of which after the change call returned", Stat: "median", Format: "%.0f ms"},
				{Detail: bgpDetailWithdraw, Header: "withdraw: until the gateway has none", Stat: "median", Format: "%.0f ms"},
			},
		}
		for _, sp := range bgpSpeakers {
			c := Case{ID: BGPCaseID(m.key, sp.key), Label: sp.label, Unit: "ms", Better: LowerIsBetter}
			if sp.key == "bird" {
				c.Kernel = true
			} else {
				c.Baseline = BGPCaseID(m.key, "bird")
			}
			t.Cases = append(t.Cases, c)
		}
		s.Tables = append(s.Tables, t)
	}
	s.Run = func(ctx context.Context, o *Options, rec *Recorder) error {
		p := bgpParamsFor(o.Quick)
		rec.Param("bgp.routes", bgpRoutes)
		rec.Param("bgp.announceRounds", p.announceRounds)
		rec.Param("bgp.moveRounds", p.moveRounds)
		rec.Param("bgp.pollMs", int(bgpPoll/time.Millisecond))
		rec.logf("BGP: %d rounds of %d routes and %d rounds of one route, each on both speakers", p.announceRounds, bgpRoutes, p.moveRounds)
		return runBGPBench(ctx, o.BinDir, p, rec)
	}
	s.Method = func(rec *Recorder) string {
		return fmt.Sprintf(`Two hosts and the data center's gateway on one underlay segment; the gateway runs BIRD 2 (AS %d) with one eBGP session to each host and nothing else, and is the receiver both speakers are timed against.

- **calyx** (host-a): calyx-agent with a BGPConfiguration (AS %d, no node-to-node mesh) and the gateway as host-a's only BGPPeer; its embedded GoBGP speaker advertises each WorkloadEndpoint address of host-a outside any IPAM block as a /32. The endpoints are in a pool with no block and their interfaces do not exist (the dataplane keeps them pending, BGP advertises them). A change is one `+"`calyxctl apply -f -`"+` of the new endpoints to the lab's file datastore; **the figure includes the whole control plane**: calyxctl (parse, validate the whole model, write), the agent's watch and reconcile of the model change, then GoBGP. The extra columns split it: the change call (for 1,000 endpoints mostly calyxctl writing one file per endpoint, which depends on the machine's disk) and what came after the call returned (the agent and GoBGP; they may start before it returns).
- **BIRD 2 as the node's speaker (Calico's way)** (host-b, no calyx agent): BIRD in host-b's namespace (AS %d) with the gateway as its one neighbor, announcing static blackhole /32s (a node's BIRD exports its workloads' routes the same way). A change is rewriting bird.conf, checking it with `+"`bird -p`"+` and `+"`birdc configure`"+` (the static protocol reconfigures in place, the session stays up). **No controller is included**: in Calico, confd rendering the config from the datastore would come first.
- **%s routes**: the change adds %s /32s at once; the figure is the time from just before the change call until the gateway's BIRD holds the last of them, from that host's session, with the host's underlay address as BGP next hop. Then the routes are withdrawn (calyxctl delete of the same endpoints; the config without them) and the gateway is polled until it has none (extra column). %d rounds, the two speakers alternating which goes first.
- **One route**: the same with one new /32 (one new endpoint; one more static route), a different address each round. %d rounds, alternating.
- **How the end is found**: the change runs in the background while the gateway is asked every %d ms (`+"`birdc show route in RANGE protocol HOST count where bgp_next_hop = ADDR`"+`, about 2 ms each) until it holds the whole change with the right next hop; then the figure is read from the gateway's own record of when each of those routes last changed (the time `+"`birdc show route`"+` prints, to the ms, BIRD's clock being the machine's), the newest of them, so it does not depend on the poll interval. When the first poll showing the whole change came back is kept in results.json (`+"`seenMs`"+`, late by up to one interval); the run fails if the two disagree. The withdrawal has no such record: its column is the poll's.
- **Placement**: nothing is pinned; both speakers, the gateway's BIRD and the polling share the machine's CPUs, one side changing at a time.
`,
			lab.DefaultFabricAS, lab.DefaultNodeAS, lab.DefaultNodeAS,
			fmtCount(rec.ParamInt("bgp.routes")), fmtCount(rec.ParamInt("bgp.routes")), rec.ParamInt("bgp.announceRounds"),
			rec.ParamInt("bgp.moveRounds"), rec.ParamInt("bgp.pollMs"))
	}
	return s
}

// bgpBench is the lab of one BGP run.
type bgpBench struct {
	l      *lab.Lab
	a, b   *lab.Host
	gw     *lab.BIRD // the gateway's BIRD: the receiver
	node   *lab.BIRD // host-b's BIRD: the baseline speaker
	nodeOp lab.BIRDOptions
	rec    *Recorder
}

func runBGPBench(ctx context.Context, binDir string, p bgpParams, rec *Recorder) (err error) {
	for _, tool := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed (Debian package %s; make deps installs it)", tool, lab.BIRDPackage)
		}
	}
	l, err := lab.New(lab.Options{BinDir: binDir, Context: ctx})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	b := &bgpBench{l: l, rec: rec}
	if err := b.build(); err != nil {
		return fmt.Errorf("BGP lab: %w", err)
	}
	for r := 0; r < p.announceRounds; r++ {
		for _, sp := range bgpOrder(r) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := b.round("announce1000", sp, r, bgpRange(sp, bgpRoutes, 0), 60*time.Second); err != nil {
				return fmt.Errorf("%d routes, round %d, %s: %w", bgpRoutes, r+1, sp, err)
			}
		}
	}
	for r := 0; r < p.moveRounds; r++ {
		for _, sp := range bgpOrder(r) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := b.round("move1", sp, r, []netip.Addr{bgpMoveAddr(sp, r)}, 20*time.Second); err != nil {
				return fmt.Errorf("one route, round %d, %s: %w", r+1, sp, err)
			}
		}
	}
	return nil
}

// bgpOrder is round r's order of the speakers: every other round BIRD
// first.
func bgpOrder(r int) []string {
	if r%2 == 1 {
		return []string{"bird", "calyx"}
	}
	return []string{"calyx", "bird"}
}

// bgpBase is a speaker's address range.
func bgpBase(speaker string) netip.Prefix {
	if speaker == "bird" {
		return bgpBIRDRange
	}
	return bgpCalyxRange
}

// bgpRange returns n host addresses of speaker's range from the third
// octet off: x.y.off.1 to x.y.off.250, then x.y.(off+1).1 and so on (no
// .0 or .255, which some would read as network or broadcast).
func bgpRange(speaker string, n, off int) []netip.Addr {
	b := bgpBase(speaker).Addr().As4()
	out := make([]netip.Addr, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, netip.AddrFrom4([4]byte{b[0], b[1], byte(off + i/250), byte(i%250 + 1)}))
	}
	return out
}

// bgpMoveAddr is the one new address of round r, away from the big change's.
func bgpMoveAddr(speaker string, r int) netip.Addr {
	return bgpRange(speaker, r+1, 250)[r]
}

// bgpEndpointsYAML renders a WorkloadEndpoint on node per address, each
// with an interface that does not exist; tag keeps the names and
// interfaces of different batches apart.
func bgpEndpointsYAML(node, tag string, addrs []netip.Addr) string {
	var b strings.Builder
	for i, a := range addrs {
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, "apiVersion: calyx.io/v1\nkind: WorkloadEndpoint\nmetadata:\n  name: bgp-%s-%d\nspec:\n  node: %s\n  interface: bgp%s%d\n  ipNetworks:\n  - %s/32\n", tag, i, node, tag, i, a)
	}
	return b.String()
}

func (b *bgpBench) build() error {
	l := b.l
	var err error
	if b.a, err = l.AddHost("host-a", "10.30.0.11/24"); err != nil {
		return err
	}
	if b.b, err = l.AddHost("host-b", "10.30.0.12/24"); err != nil {
		return err
	}
	g, err := l.AddGateway(lab.GatewayOptions{})
	if err != nil {
		return err
	}
	fab, err := l.StartFabricBGP(lab.FabricBGPOptions{Only: []string{b.a.Name, b.b.Name}})
	if err != nil {
		return err
	}
	b.gw = fab.Gateway
	b.nodeOp = lab.BIRDOptions{
		NS: b.b.NS, RouterID: b.b.Underlay.Addr(), AS: lab.DefaultNodeAS,
		Neighbors: []lab.BIRDNeighbor{{Address: g.Address.Addr(), AS: lab.DefaultFabricAS}},
		NoKernel:  true,
	}
	if b.node, err = l.StartBIRD(b.nodeOp); err != nil {
		return err
	}
	if err := l.StartAgent(b.a.Name); err != nil {
		return err
	}
	model := lab.JoinYAML(
		lab.Pool{Name: bgpEndpointPool, CIDR: bgpCalyxRange.String()}.YAML(),
		lab.NodeYAML(b.a),
		lab.BGPConfigurationYAML(lab.DefaultNodeAS, false),
		lab.BGPPeer{Name: "gateway", PeerIP: g.Address.Addr(), AS: lab.DefaultFabricAS, Node: b.a.Name}.YAML())
	if out, err := l.Apply("", model); err != nil {
		return fmt.Errorf("apply: %w: %s", err, out)
	}
	for _, h := range []*lab.Host{b.a, b.b} {
		if _, err := b.gw.WaitEstablished(lab.BIRDProtocolName(h.Name), 30*time.Second); err != nil {
			return fmt.Errorf("the gateway's session with %s: %w\n%s", h.Name, err, b.agentLogTail())
		}
	}
	// Neither side announces anything in its range yet.
	for _, sp := range []string{"calyx", "bird"} {
		n, m, err := b.count(sp, bgpBase(sp), false)
		if err != nil {
			return err
		}
		if n != 0 || m != 0 {
			return fmt.Errorf("the gateway already has %d routes in %s", m, bgpBase(sp))
		}
	}
	return nil
}

// host is the host of a speaker.
func (b *bgpBench) host(speaker string) *lab.Host {
	if speaker == "bird" {
		return b.b
	}
	return b.a
}

// count asks the gateway how many routes of speaker's session it has in
// rng: with checkNH, n counts those with the speaker's host as BGP next
// hop and m all of them; without, both count all of them.
func (b *bgpBench) count(speaker string, rng netip.Prefix, checkNH bool) (n, m int, err error) {
	h := b.host(speaker)
	args := []string{"show", "route", "in", rng.String(), "protocol", lab.BIRDProtocolName(h.Name), "count"}
	if checkNH {
		args = append(args, "where", "bgp_next_hop", "=", h.Underlay.Addr().String())
	}
	out, err := b.gw.Birdc(args...)
	if err != nil {
		return 0, 0, err
	}
	return parseBIRDCount(out)
}

// lastChange returns when the newest of the gateway's routes in rng from
// speaker's session last changed, by BIRD's own clock: the time "show
// route" prints for each (ms). ref is a time shortly before, for the date.
func (b *bgpBench) lastChange(speaker string, rng netip.Prefix, ref time.Time) (time.Time, error) {
	out, err := b.gw.Birdc("show", "route", "in", rng.String(), "protocol", lab.BIRDProtocolName(b.host(speaker).Name))
	if err != nil {
		return time.Time{}, err
	}
	routes, err := lab.ParseBIRDRoutes(out)
	if err != nil {
		return time.Time{}, err
	}
	if len(routes) == 0 {
		return time.Time{}, fmt.Errorf("the gateway has no route in %s from %s", rng, speaker)
	}
	var last time.Time
	for _, r := range routes {
		t, err := parseBIRDTime(r.Since, ref)
		if err != nil {
			return time.Time{}, fmt.Errorf("route %s: %w", r.Prefix, err)
		}
		if t.After(last) {
			last = t
		}
	}
	return last, nil
}

// parseBIRDTime reads a route's time as BIRD 2 prints it, local time with
// ms: "15:04:05.000" (the day is ref's, or the one next to it that puts
// the time within 12 hours of ref) or "2006-01-02 15:04:05.000".
func parseBIRDTime(s string, ref time.Time) (time.Time, error) {
	ref = ref.Local()
	if t, err := time.ParseInLocation("2006-01-02 15:04:05.000", s, time.Local); err == nil {
		return t, nil
	}
	c, err := time.ParseInLocation("15:04:05.000", s, time.Local)
	if err != nil {
		return time.Time{}, fmt.Errorf("BIRD time %q: want HH:MM:SS.mmm (route times with ms)", s)
	}
	t := time.Date(ref.Year(), ref.Month(), ref.Day(), c.Hour(), c.Minute(), c.Second(), c.Nanosecond(), time.Local)
	switch {
	case t.Sub(ref) > 12*time.Hour:
		t = t.AddDate(0, 0, -1)
	case ref.Sub(t) > 12*time.Hour:
		t = t.AddDate(0, 0, 1)
	}
	return t, nil
}

// birdCountRE is the first line of "show route ... count":
// "1000 of 1000 routes for 1000 networks in table master4".
var birdCountRE = regexp.MustCompile(`(?m)^(\d+) of (\d+) routes for \d+ networks in table `)

// parseBIRDCount returns the two figures of the first table's line of
// "birdc show route ... count": the routes that passed the filter and all
// the routes asked about.
func parseBIRDCount(out string) (n, m int, err error) {
	sm := birdCountRE.FindStringSubmatch(out)
	if sm == nil {
		return 0, 0, fmt.Errorf("no route count in birdc's answer: %q", strings.TrimSpace(out))
	}
	n, _ = strconv.Atoi(sm[1])
	m, _ = strconv.Atoi(sm[2])
	return n, m, nil
}

// round measures one change of one speaker: addrs announced, timed until
// the gateway has them all, then withdrawn, timed until it has none.
func (b *bgpBench) round(metric, speaker string, r int, addrs []netip.Addr, timeout time.Duration) error {
	rng := bgpBase(speaker)
	if len(addrs) == 1 {
		rng = netip.PrefixFrom(addrs[0], 32)
	}
	id := BGPCaseID(metric, speaker)
	add, del := b.changes(speaker, metric[:1], addrs)
	start := time.Now()
	seen, changeTook, err := b.converge(add, func() (bool, string, error) {
		n, m, err := b.count(speaker, rng, true)
		if err != nil {
			return false, "", err
		}
		if m > n {
			return false, "", fmt.Errorf("%d of the gateway's %d routes in %s have a BGP next hop other than %s", m-n, m, rng, b.host(speaker).Underlay.Addr())
		}
		return n == len(addrs), fmt.Sprintf("%d of %d routes", n, len(addrs)), nil
	}, timeout)
	if err != nil {
		return b.explain(speaker, err)
	}
	last, err := b.lastChange(speaker, rng, start)
	if err != nil {
		return err
	}
	// The change started after start and the poll saw it complete at
	// start+seen; BIRD's clock (ms, truncated) must agree.
	arrived := last.Sub(start)
	if arrived < -2*time.Millisecond || arrived > seen+2*time.Millisecond {
		return fmt.Errorf("the gateway's newest route changed at %s, %s after the change started, but the poll saw them all %s after it: the clocks disagree", last.Format("15:04:05.000"), arrived, seen)
	}
	arrived = max(arrived, 0)
	withdrew, _, err := b.converge(del, func() (bool, string, error) {
		_, m, err := b.count(speaker, rng, false)
		return m == 0, fmt.Sprintf("%d routes left", m), err
	}, timeout)
	if err != nil {
		return b.explain(speaker, fmt.Errorf("withdraw: %w", err))
	}
	b.rec.Add(id, r, ms(arrived))
	b.rec.Detail(id, bgpDetailChange, ms(changeTook))
	b.rec.Detail(id, bgpDetailAfter, ms(max(arrived-changeTook, 0)))
	b.rec.Detail(id, bgpDetailSeen, ms(seen))
	b.rec.Detail(id, bgpDetailWithdraw, ms(withdrew))
	b.rec.logf("BGP %s round %d %s: %.0f ms (seen by the poll at %.0f ms, change call %.0f ms), withdrawn in %.0f ms", metric, r+1, speaker, ms(arrived), ms(seen), ms(changeTook), ms(withdrew))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// changes returns the calls that announce addrs from speaker and withdraw
// them again; tag (one letter) names the calyx side's endpoints.
func (b *bgpBench) changes(speaker, tag string, addrs []netip.Addr) (add, del func() error) {
	if speaker == "calyx" {
		yaml := bgpEndpointsYAML(b.a.Name, tag, addrs)
		apply := func(f func(string, string) (string, error)) func() error {
			return func() error {
				if out, err := f("", yaml); err != nil {
					return fmt.Errorf("%w: %s", err, out)
				}
				return nil
			}
		}
		return apply(b.l.Apply), apply(b.l.Delete)
	}
	with := b.nodeOp
	for _, a := range addrs {
		with.Announce = append(with.Announce, netip.PrefixFrom(a, 32))
	}
	return func() error { return b.node.Reconfigure(with) }, func() error { return b.node.Reconfigure(b.nodeOp) }
}

// converge runs change in the background, polling done every bgpPoll from
// the moment change starts. It returns the time from just before change
// until the first poll whose answer showed the change complete, and how
// long change itself took (it waits for change to return either way).
func (b *bgpBench) converge(change func() error, done func() (bool, string, error), timeout time.Duration) (took, changeTook time.Duration, err error) {
	finished := make(chan error, 1)
	start := time.Now()
	go func() {
		err := change()
		changeTook = time.Since(start)
		finished <- err
	}()
	returned := false
	var state string
	for {
		ok, s, perr := done()
		at := time.Now()
		if perr != nil {
			err = perr
			break
		}
		state = s
		if ok {
			took = at.Sub(start)
			break
		}
		if at.Sub(start) > timeout {
			err = fmt.Errorf("not done after %s: %s", timeout, state)
			break
		}
		if !returned {
			select {
			case cerr := <-finished:
				if cerr != nil {
					return 0, 0, cerr
				}
				returned = true
			default:
			}
		}
		time.Sleep(bgpPoll)
	}
	if !returned {
		if cerr := <-finished; cerr != nil {
			return 0, 0, errors.Join(cerr, err)
		}
	}
	return took, changeTook, err
}

// explain adds the speaker's log to a failure.
func (b *bgpBench) explain(speaker string, err error) error {
	if speaker == "calyx" {
		return fmt.Errorf("%w\n%s", err, b.agentLogTail())
	}
	return fmt.Errorf("%w\n--- %s ---\n%s", err, b.node.LogPath, bgpTail(b.node.Log(), 20))
}

func (b *bgpBench) agentLogTail() string {
	return "--- agent log (host-a) ---\n" + bgpTail(b.l.AgentLog(b.a.Name), 20)
}

// bgpTail is the last n lines of s.
func bgpTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
