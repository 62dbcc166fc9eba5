package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/policy"
	"github.com/calyxnet/calyx/tests/bench/policymodel"
)

// The scale section (issues 5 and 16): one agent with a hypervisor fleet's
// model — endpoints on this node and others, a floating IP each, policies
// selecting them — started from empty, given every policy at once, and
// changed one resource at a time.

// Case IDs of the scale section.
const (
	caseCPApply          = "cp.apply.policies"
	caseCPApplyCtl       = "cp.apply.policies-ctl"
	caseCPStartFull      = "cp.start.full-model"
	caseCPChangePolicy   = "cp.change.policy"
	caseCPChangeEndpoint = "cp.change.full-endpoint"
	caseCPChangeFIP      = "cp.change.full-fip"
	caseCPRSSFull        = "cp.rss.full-model"
	caseCPRSSSteady      = "cp.rss.steady"
)

// scaleParams size one scale run: endpoints (local of them on the agent's
// node, each with a floating IP), policies; cold starts, timed applies of
// every policy, and changes of each kind (a rule, an endpoint, a floating
// IP).
type scaleParams struct {
	endpoints, local, policies, starts, applies, changes int
}

func scaleParamsFor(quick bool) scaleParams {
	if quick {
		return scaleParams{endpoints: 2000, local: 200, policies: 1000, starts: 1, applies: 1, changes: 5}
	}
	return scaleParams{endpoints: 10000, local: 1000, policies: 1000, starts: 3, applies: 3, changes: 50}
}

// The goals of issue 16, judged at the full size only.
const (
	scaleGoalChangeMs = 20
	scaleGoalStartMs  = 1000
	scaleGoalRSSMiB   = 150
)

func scaleSection(quick bool) *Section {
	p := scaleParamsFor(quick)
	ms := func(id, label string) Case { return Case{ID: id, Label: label, Unit: "ms", Better: LowerIsBetter} }
	mdl := fmt.Sprintf("%s endpoints (%s on the agent's node) + %s floating IPs", fmtCount(p.endpoints), fmtCount(p.local), fmtCount(p.endpoints))
	pols := fmt.Sprintf("%s policies (%s rules)", fmtCount(p.policies), fmtCount(p.policies*policymodel.RulesPerPolicy))
	change := func(id, what string) Case {
		c := ms(id, fmt.Sprintf("%s (datastore write → the agent's sync done)", what))
		c.Percentiles = true
		c.Goal = &Goal{Issue: "issue 16", Text: fmt.Sprintf("%s in the pinned maps: p99 ≤ %d ms", what, scaleGoalChangeMs), MaxValue: scaleGoalChangeMs, Stat: "p99"}
		return c
	}
	start := ms(caseCPStartFull, fmt.Sprintf("program %s + %s from an empty start (agent start → first sync done)", mdl, pols))
	start.Goal = &Goal{Issue: "issue 16", Text: fmt.Sprintf("cold start from empty ≤ %d ms", scaleGoalStartMs), MaxValue: scaleGoalStartMs}
	rss := Case{ID: caseCPRSSFull, Label: fmt.Sprintf("agent RSS with %s + %s programmed, a second after its first sync", mdl, pols), Unit: "MiB", Better: LowerIsBetter,
		Goal: &Goal{Issue: "issue 16", Text: fmt.Sprintf("agent RSS ≤ %d MiB (after the first sync)", scaleGoalRSSMiB), MaxValue: scaleGoalRSSMiB}}
	steady := Case{ID: caseCPRSSSteady, Label: "agent RSS after the bulk applies and every change, a second later (Go's heap grows to twice what is live between collections)", Unit: "MiB", Better: LowerIsBetter}
	s := &Section{
		Key:   "scale",
		Title: "Control plane at scale: " + mdl + ", " + pols,
		Tables: []Table{
			{Title: "From an empty start, and every policy at once",
				Note: "There is no kernel counterpart: these figures have no ratio.",
				Cases: []Case{
					start,
					ms(caseCPApply, fmt.Sprintf("%s applied in one `calyxctl apply` (start of the apply → the agent's sync done)", pols)),
					ms(caseCPApplyCtl, "of which `calyxctl apply` itself (parse, check, write)"),
				},
				Extras: []Extra{
					{Detail: "policyEntries", Header: "cx_policy entries", Stat: "max", Format: "%.0f"},
					{Detail: "startedMs", Header: "of which to \"agent started\" ms (median)", Stat: "median", Format: "%.0f"},
					{Detail: "firstSyncMs", Header: "first reconcile ms (median)", Stat: "median", Format: "%.0f"},
				}},
			{Title: "One change", Note: "p50 and p99 over every change made.", Cases: []Case{
				change(caseCPChangePolicy, "one rule of one policy changed"),
				change(caseCPChangeEndpoint, "one endpoint added (on another node, labelled like the others)"),
				change(caseCPChangeFIP, "one floating IP added"),
			}, Extras: []Extra{
				{Detail: extraP99, Header: "p99 ms", Format: "%.1f"},
				{Detail: "writeMs", Header: "of which the datastore write ms (median)", Stat: "median", Format: "%.1f"},
				{Detail: "reconcileMs", Header: "the agent's reconcile ms (median)", Stat: "median", Format: "%.1f"},
			}},
			{Title: "Agent memory", Cases: []Case{rss, steady}},
		},
		Method: scaleMethod,
	}
	s.Run = func(ctx context.Context, o *Options, rec *Recorder) error {
		rec.Param("scale.endpoints", p.endpoints)
		rec.Param("scale.local", p.local)
		rec.Param("scale.policies", p.policies)
		rec.Param("scale.starts", p.starts)
		rec.Param("scale.applies", p.applies)
		rec.Param("scale.changes", p.changes)
		if quick {
			s.notJudged(rec, "quick pass: the goals are set at 10,000 endpoints")
		}
		rec.logf("scale: %d endpoints (%d local), %d policies", p.endpoints, p.local, p.policies)
		return ScaleControlPlane(ctx, o.BinDir, p, rec)
	}
	return s
}

// scaleMethod explains the section.
func scaleMethod(rec *Recorder) string {
	var b strings.Builder
	fmt.Fprintf(&b, "One `calyx-agent` in its own network namespace (the control-plane section's lab) on a file datastore with %s endpoints labelled as in the policy section's model, %s of them on the agent's node (their interfaces do not exist; their tables are compiled and programmed all the same), each with a floating IP, and %s policies of `policymodel.Policies`. ",
		fmtCount(rec.ParamInt("scale.endpoints")), fmtCount(rec.ParamInt("scale.local")), fmtCount(rec.ParamInt("scale.policies")))
	fmt.Fprintf(&b, "Every time is taken to the agent's `synced` log line whose datastore revision covers the write (the reconcile that computed and wrote every map is done; its time is the line's arrival). Cold starts (%s) time an agent started on empty maps with the whole model; RSS is the agent's a second after that first sync, and again a second after the last change (the agent gives the garbage of its start, and of any reconcile that wrote 10,000 map entries or more, back to the system at once). ", times(rec.ParamInt("scale.starts")))
	fmt.Fprintf(&b, "Then, %s, every policy is deleted (the agent empties cx_policy), and all of them are applied again in one `calyxctl apply -f` of a YAML file. ", times(rec.ParamInt("scale.applies")))
	fmt.Fprintf(&b, "Then %d changes of each kind, one at a time, each written with one datastore apply: one rule's ports in another policy; a new endpoint on another node, labelled like the rest (a route, an ipcache identity); a floating IP for that endpoint (a cx_fips entry, a route). ", rec.ParamInt("scale.changes"))
	fmt.Fprintf(&b, "After every start and every apply, and after the changes, cx_policy is read back from the pinned map and must equal, entry for entry, what `policy/` compiles from the datastore's model; every added endpoint's route and floating IP's entry is checked in the pinned maps.\n")
	return b.String()
}

// scaleChanges makes p.changes changes of each kind to the running agent a
// and times each to the agent's sync.
func scaleChanges(ctx context.Context, cl *cpLab, a *cpAgent, m *bpfmap.Maps, pols []*model.NetworkPolicy, p scaleParams, rec *Recorder) error {
	rev, err := revision(ctx, cl.ds)
	if err != nil {
		return err
	}
	// Each write below changes the model, so it moves the file store's
	// revision on by one: the sync to wait for is known without reading
	// the whole store again (which would load the machine being timed).
	timed := func(id string, k int, r model.Resource) (time.Duration, error) {
		t0 := time.Now()
		if err := cl.ds.Apply(ctx, []model.Resource{r}); err != nil {
			return 0, err
		}
		rev++
		t1 := time.Now()
		sy, err := a.waitSync(rev, 60*time.Second)
		if err != nil {
			return 0, fmt.Errorf("%s %d: %w", id, k+1, err)
		}
		d := sy.at.Sub(t0)
		rec.Add(id, k, msOf(d))
		// Where the time goes: the datastore write, the agent's
		// reconcile (as it times it), and between them the watch.
		rec.Detail(id, "writeMs", msOf(t1.Sub(t0)))
		rec.Detail(id, "reconcileMs", msOf(sy.took))
		return d, nil
	}
	lat := map[string][]time.Duration{}
	for k := range p.changes {
		j := k * 37 % len(pols)
		pol := policymodel.Policy(j)
		r := &pol.Spec.Ingress[0].Destination
		r.Ports = append(r.Ports, model.PortRange{First: uint16(8443 + k), Last: uint16(8443 + k)})
		d, err := timed(caseCPChangePolicy, k, pol)
		if err != nil {
			return err
		}
		lat[caseCPChangePolicy] = append(lat[caseCPChangePolicy], d)
	}
	for k := range p.changes {
		i := p.endpoints + k
		d, err := timed(caseCPChangeEndpoint, k, polEndpoint(i, false))
		if err != nil {
			return err
		}
		lat[caseCPChangeEndpoint] = append(lat[caseCPChangeEndpoint], d)
		if err := waitForRoute(m, endpointAddr(i).Addr(), time.Second); err != nil {
			return fmt.Errorf("endpoint %d: %w", k+1, err)
		}
	}
	for k := range p.changes {
		i := p.endpoints + k
		d, err := timed(caseCPChangeFIP, k, floatingIP(i))
		if err != nil {
			return err
		}
		lat[caseCPChangeFIP] = append(lat[caseCPChangeFIP], d)
		if err := waitForFloatingIP(m, floatingAddr(i), time.Second); err != nil {
			return fmt.Errorf("floating IP %d: %w", k+1, err)
		}
	}
	want, err := compileLocal(ctx, cl.ds)
	if err != nil {
		return err
	}
	if err := checkPolicyMap(m, want); err != nil {
		return fmt.Errorf("after the changes: %w", err)
	}
	time.Sleep(time.Second)
	rss := float64(rssKiB(a.cmd.Process.Pid)) / 1024
	rec.Add(caseCPRSSSteady, 0, rss)
	rec.logf("scale: RSS after the changes: %.1f MiB", rss)
	for _, id := range []string{caseCPChangePolicy, caseCPChangeEndpoint, caseCPChangeFIP} {
		rec.logf("scale: %s: p50 %s, p99 %s", id, Percentile(lat[id], 50).Round(10*time.Microsecond), Percentile(lat[id], 99).Round(10*time.Microsecond))
	}
	return nil
}

// revision is the datastore's revision now.
func revision(ctx context.Context, ds model.Datastore) (uint64, error) {
	s, err := ds.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	return s.Revision, nil
}

// ScaleControlPlane runs the scale section (see scaleMethod).
func ScaleControlPlane(ctx context.Context, binDir string, p scaleParams, rec *Recorder) error {
	cl, err := newCPLab("scale")
	if err != nil {
		return err
	}
	defer cl.close()
	pols := policymodel.Policies(p.policies)
	rs := cpBaseModel()
	for i := range p.endpoints {
		rs = append(rs, polEndpoint(i, i < p.local), floatingIP(i))
	}
	for _, pol := range pols {
		rs = append(rs, pol)
	}
	if err := cl.ds.Apply(ctx, rs); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	yamlPath := filepath.Join(cl.work, "policies.yaml")
	f, err := os.Create(yamlPath)
	if err != nil {
		return err
	}
	res := make([]model.Resource, len(pols))
	for i, pol := range pols {
		res[i] = pol
	}
	err = model.Encode(f, res...)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	refs := make([]model.Ref, len(pols))
	for i, pol := range pols {
		refs[i] = model.RefOf(pol)
	}
	want, err := compileLocal(ctx, cl.ds)
	if err != nil {
		return err
	}
	rec.logf("scale: %d endpoints (%d local), %d policies: %d cx_policy entries", p.endpoints, p.local, p.policies, len(want))

	var a *cpAgent
	defer func() {
		if a != nil {
			a.stop()
		}
	}()
	var m *bpfmap.Maps
	defer func() {
		if m != nil {
			m.Close()
		}
	}()
	prevDir := ""
	for s := range p.starts {
		if a != nil {
			a.stop()
			a = nil
			m.Close()
			m = nil
			// Unpins the stopped agent's maps and links: its programs
			// detach.
			os.RemoveAll(prevDir)
		}
		rev, err := revision(ctx, cl.ds)
		if err != nil {
			return err
		}
		dir := filepath.Join(cl.bpffs, fmt.Sprintf("start%d", s))
		prevDir = dir
		t0 := time.Now()
		if a, err = startCPAgent(ctx, binDir, cl.ns, cl.dsURL, dir); err != nil {
			return err
		}
		sy, err := a.waitSync(rev, 180*time.Second)
		if err != nil {
			return fmt.Errorf("start %d: %w", s+1, err)
		}
		at := sy.at
		rec.Add(caseCPStartFull, s, msOf(at.Sub(t0)))
		if st := a.startedAt(); !st.IsZero() {
			// Where a cold start goes: to "agent started" (programs
			// loaded, the model read, the watch opened), then the first
			// reconcile (as the agent times it), then the rest.
			rec.Detail(caseCPStartFull, "startedMs", msOf(st.Sub(t0)))
			rec.Detail(caseCPStartFull, "firstSyncMs", msOf(sy.took))
		}
		time.Sleep(time.Second) // the garbage of the start given back
		rss := float64(rssKiB(a.cmd.Process.Pid)) / 1024
		rec.Add(caseCPRSSFull, s, rss)
		if m, err = waitForMaps(dir, 10*time.Second); err != nil {
			return err
		}
		if err := checkPolicyMap(m, want); err != nil {
			return fmt.Errorf("start %d: %w", s+1, err)
		}
		rec.Detail(caseCPStartFull, "policyEntries", float64(len(want)))
		rec.logf("scale: start %d: full model programmed in %s (agent started after %s, first reconcile %s), RSS %.1f MiB", s+1, at.Sub(t0).Round(time.Millisecond), a.startedAt().Sub(t0).Round(time.Millisecond), sy.took.Round(time.Millisecond), rss)
	}

	ctl := filepath.Join(binDir, "calyxctl")
	for k := range p.applies {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := cl.ds.Delete(ctx, refs); err != nil {
			return fmt.Errorf("delete the policies: %w", err)
		}
		rev, err := revision(ctx, cl.ds)
		if err != nil {
			return err
		}
		if _, err := a.waitSynced(rev, 120*time.Second); err != nil {
			return err
		}
		if err := checkPolicyMap(m, nil); err != nil {
			return fmt.Errorf("after deleting every policy: %w", err)
		}
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, ctl, "--datastore", cl.dsURL, "apply", "-f", yamlPath).CombinedOutput()
		tctl := time.Now()
		if err != nil {
			return fmt.Errorf("calyxctl apply: %w: %s", err, out)
		}
		if rev, err = revision(ctx, cl.ds); err != nil {
			return err
		}
		at, err := a.waitSynced(rev, 120*time.Second)
		if err != nil {
			return fmt.Errorf("apply %d: %w", k+1, err)
		}
		if err := checkPolicyMap(m, want); err != nil {
			return fmt.Errorf("apply %d: %w", k+1, err)
		}
		rec.Add(caseCPApply, k, msOf(at.Sub(t0)))
		rec.Add(caseCPApplyCtl, k, msOf(tctl.Sub(t0)))
		rec.Detail(caseCPApply, "policyEntries", float64(len(want)))
		rec.logf("scale: apply %d: %d policies programmed in %s (calyxctl apply %s)", k+1, len(pols), at.Sub(t0).Round(time.Millisecond), tctl.Sub(t0).Round(time.Millisecond))
	}

	return scaleChanges(ctx, cl, a, m, pols, p, rec)
}

// compileLocal is what policy compiles for node "local" from the
// datastore's model: the expected content of cx_policy.
func compileLocal(ctx context.Context, ds model.Datastore) (map[bpfmap.PolicyKey]bpfmap.PolicyVerdict, error) {
	s, err := ds.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out, err := policy.Compile(policy.Input{Snapshot: s, Node: "local"})
	if err != nil {
		return nil, err
	}
	return out.Policy, nil
}

// checkPolicyMap fails unless cx_policy holds exactly want.
func checkPolicyMap(m *bpfmap.Maps, want map[bpfmap.PolicyKey]bpfmap.PolicyVerdict) error {
	got, err := m.Policy.All()
	if err != nil {
		return err
	}
	bad := 0
	var example string
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			if bad++; example == "" {
				example = fmt.Sprintf("%+v: %+v (present %v), want %+v", k, g, ok, v)
			}
		}
	}
	if bad > 0 || len(got) != len(want) {
		return fmt.Errorf("cx_policy holds %d entries, policy compiles %d; %d differ (e.g. %s)", len(got), len(want), bad, example)
	}
	return nil
}
