package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/calyxnet/calyx/model"
)

// openDatastore opens o.Datastore with the TLS files of --etcd-ca,
// --etcd-cert and --etcd-key. Every command that reads or writes the model
// opens it this way.
func (o Options) openDatastore() (model.Datastore, error) {
	opts, err := model.TLSOptions(o.Datastore, o.EtcdCA, o.EtcdCert, o.EtcdKey)
	if err != nil {
		return nil, err
	}
	if o.stderr != nil {
		// Warnings only: a command's own errors say the rest, and "etcd
		// reachable" is no news to someone whose command worked.
		opts = append(opts, model.WithLogger(slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	}
	return model.Open(o.Datastore, opts...)
}

func readInput(stdio IO, args []string, verb string) ([]model.Resource, error) {
	if len(args) != 2 || args[0] != "-f" {
		return nil, usagef("%s: want '%s -f FILE'", verb, verb)
	}
	var r io.Reader = stdio.In
	if args[1] != "-" {
		f, err := os.Open(args[1])
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	rs, err := model.Decode(bytes.NewReader(withoutStatus(b)))
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%s: no resources in %s", verb, args[1])
	}
	return rs, nil
}

func apply(ctx context.Context, o Options, args []string, stdio IO) error {
	force := slices.Contains(args, "--force")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--force" })
	rs, err := readInput(stdio, args, "apply")
	if err != nil {
		return err
	}
	// IPAMBlocks are IPAM's own records (ipam allocate, block claims): one
	// written by hand can take addresses or a block from under a node.
	for _, r := range rs {
		if model.RefOf(r).Kind == model.KindIPAMBlock && !force {
			return usagef("apply: %s is IPAM's own record (calyxctl ipam allocate and release keep it); writing it by hand can hand one address or block to two owners: add --force to apply it anyway", model.RefOf(r))
		}
	}
	ds, err := o.openDatastore()
	if err != nil {
		return err
	}
	defer ds.Close()
	if err := ds.Apply(ctx, rs); err != nil {
		return err
	}
	changed := make(map[model.Ref]bool, len(rs))
	for _, r := range rs {
		fmt.Fprintf(stdio.Out, "applied %s\n", model.RefOf(r))
		changed[model.RefOf(r)] = true
	}
	// What was written is allowed but may not do what was meant: say so.
	// The apply stands either way, so a model that cannot be read back
	// now only goes unchecked.
	if snap, err := ds.Snapshot(ctx); err == nil {
		for _, w := range model.Warnings(snap, changed) {
			fmt.Fprintf(stdio.Err, "warning: %s\n", w)
		}
	}
	return nil
}

func deleteCmd(ctx context.Context, o Options, args []string, stdio IO) error {
	var refs []model.Ref
	if len(args) == 2 && args[0] != "-f" {
		kind, err := model.ParseKind(args[0])
		if err != nil {
			return usagef("delete: %v", err)
		}
		refs = []model.Ref{{Kind: kind, Name: args[1]}}
	} else {
		rs, err := readInput(stdio, args, "delete")
		if err != nil {
			return err
		}
		for _, r := range rs {
			refs = append(refs, model.RefOf(r))
		}
	}
	ds, err := o.openDatastore()
	if err != nil {
		return err
	}
	defer ds.Close()
	if err := ds.Delete(ctx, refs); err != nil {
		return err
	}
	for _, r := range refs {
		fmt.Fprintf(stdio.Out, "deleted %s\n", r)
	}
	return nil
}

// resourceRow is the table view of any resource; JSON and YAML print the
// resources themselves.
type resourceRow struct {
	Kind   string `table:"KIND"`
	Name   string `table:"NAME"`
	Detail string `table:"SPEC"`
}

// floatingIPRow is the table view of a FloatingIP. FixedIP is the address
// in force: spec.fixedIP, or the endpoint's first IPv4 when none is given
// ("-" when the endpoint is missing or has none).
type floatingIPRow struct {
	Name     string `table:"NAME"`
	IP       string `table:"IP"`
	Endpoint string `table:"ENDPOINT"`
	FixedIP  string `table:"FIXED-IP"`
}

// addrCell is "" (printed "-") for the zero Addr, whose String is "invalid IP".
func addrCell(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func floatingIPRows(snap *model.Snapshot, rs []model.Resource) []floatingIPRow {
	rows := make([]floatingIPRow, 0, len(rs))
	for _, r := range rs {
		f, ok := r.(*model.FloatingIP)
		if !ok {
			continue
		}
		row := floatingIPRow{Name: f.Metadata.Name, IP: addrCell(f.Spec.IP), Endpoint: f.Spec.Endpoint}
		if fixed, ok := snap.FixedIP(f); ok {
			row.FixedIP = fixed.String()
		}
		rows = append(rows, row)
	}
	return rows
}

// subnetRow is the table view of a Subnet. HOST-ROUTES lists the
// destinations: every host route's next hop is the GATEWAY.
type subnetRow struct {
	Name       string   `table:"NAME"`
	CIDR       string   `table:"CIDR"`
	Gateway    string   `table:"GATEWAY"`
	DHCP       string   `table:"DHCP"`
	DNS        []string `table:"DNS"`
	HostRoutes []string `table:"HOST-ROUTES"`
	Network    string   `table:"NETWORK"`
}

func subnetRows(rs []model.Resource) []subnetRow {
	rows := make([]subnetRow, 0, len(rs))
	for _, r := range rs {
		sn, ok := r.(*model.Subnet)
		if !ok {
			continue
		}
		row := subnetRow{Name: sn.Metadata.Name, Gateway: addrCell(sn.Spec.GatewayIP), DHCP: "no", Network: sn.Spec.Network}
		if sn.Spec.CIDR.IsValid() {
			row.CIDR = sn.Spec.CIDR.String()
		}
		if sn.Spec.DHCPEnabled() {
			row.DHCP = "yes"
		}
		for _, a := range sn.Spec.DNSNameservers {
			row.DNS = append(row.DNS, addrCell(a))
		}
		for _, hr := range sn.Spec.HostRoutes {
			row.HostRoutes = append(row.HostRoutes, hr.Destination.String())
		}
		rows = append(rows, row)
	}
	return rows
}

// bgpConfigurationRow is the table view of a BGPConfiguration, in
// calicoctl's columns.
type bgpConfigurationRow struct {
	Name        string `table:"NAME"`
	LogSeverity string `table:"LOGSEVERITY"`
	MeshEnabled string `table:"MESHENABLED"`
	ASNumber    string `table:"ASNUMBER"`
}

func bgpConfigurationRows(rs []model.Resource) []bgpConfigurationRow {
	rows := make([]bgpConfigurationRow, 0, len(rs))
	for _, r := range rs {
		c, ok := r.(*model.BGPConfiguration)
		if !ok {
			continue
		}
		rows = append(rows, bgpConfigurationRow{Name: c.Metadata.Name, LogSeverity: c.Spec.LogSeverityScreen,
			MeshEnabled: strconv.FormatBool(c.Spec.MeshEnabled()), ASNumber: strconv.FormatUint(uint64(c.Spec.ASNumber), 10)})
	}
	return rows
}

// bgpPeerRow is the table view of a BGPPeer, in calicoctl's columns: NODE
// is the node, the selector, or "(global)" for every node.
type bgpPeerRow struct {
	Name   string `table:"NAME"`
	PeerIP string `table:"PEERIP"`
	Node   string `table:"NODE"`
	ASN    string `table:"ASN"`
}

func bgpPeerRows(rs []model.Resource) []bgpPeerRow {
	rows := make([]bgpPeerRow, 0, len(rs))
	for _, r := range rs {
		p, ok := r.(*model.BGPPeer)
		if !ok {
			continue
		}
		row := bgpPeerRow{Name: p.Metadata.Name, PeerIP: addrCell(p.Spec.PeerIP), Node: p.Spec.Node, ASN: strconv.FormatUint(uint64(p.Spec.ASNumber), 10)}
		switch {
		case p.Spec.NodeSelector != "":
			row.Node = p.Spec.NodeSelector
		case p.Spec.Node == "":
			row.Node = "(global)"
		}
		rows = append(rows, row)
	}
	return rows
}

func get(ctx context.Context, o Options, args []string, stdio IO) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("get: want 'get KIND [NAME]'")
	}
	kind, err := model.ParseKind(args[0])
	if err != nil {
		return usagef("get: %v", err)
	}
	ds, err := o.openDatastore()
	if err != nil {
		return err
	}
	defer ds.Close()
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	var rs []model.Resource
	if len(args) == 2 {
		r, ok := snap.Get(model.Ref{Kind: kind, Name: args[1]})
		if !ok {
			return fmt.Errorf("%s/%s: not found", kind, args[1])
		}
		rs = []model.Resource{r}
	} else {
		rs = snap.Resources(kind)
	}
	if kind == model.KindNode {
		live, err := liveNodes(ctx, ds)
		if err != nil {
			return err
		}
		return getNodes(stdio.Out, o.Output, rs, live)
	}
	switch o.Output {
	case "json":
		return render(stdio.Out, "json", rs)
	case "yaml":
		return writeYAMLDocs(stdio.Out, rs)
	}
	switch kind {
	case model.KindFloatingIP:
		return render(stdio.Out, "table", floatingIPRows(snap, rs))
	case model.KindSubnet:
		return render(stdio.Out, "table", subnetRows(rs))
	case model.KindBGPConfiguration:
		return render(stdio.Out, "table", bgpConfigurationRows(rs))
	case model.KindBGPPeer:
		return render(stdio.Out, "table", bgpPeerRows(rs))
	}
	rows := make([]resourceRow, 0, len(rs))
	for _, r := range rs {
		rows = append(rows, resourceRow{Kind: r.Kind(), Name: r.Meta().Name, Detail: summary(r)})
	}
	return render(stdio.Out, "table", rows)
}

// writeYAMLDocs prints resources as a multi-document stream that apply accepts.
func writeYAMLDocs(w io.Writer, rs []model.Resource) error {
	for i, r := range rs {
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if err := writeYAML(w, r); err != nil {
			return err
		}
	}
	return nil
}

func summary(r model.Resource) string {
	switch v := r.(type) {
	case *model.IPPool:
		s := fmt.Sprintf("cidr=%s blockSize=%d ipip=%s vxlan=%s", v.Spec.CIDR, v.Spec.BlockSize, v.Spec.IPIPMode, v.Spec.VXLANMode)
		if v.Spec.NATOutgoing {
			s += " natOutgoing"
		}
		if v.Spec.External {
			s += " external"
		}
		if v.Spec.Disabled {
			s += " disabled"
		}
		return s
	case *model.Node:
		return fmt.Sprintf("ipv4Address=%s", v.Spec.IPv4Address)
	case *model.WorkloadEndpoint:
		return fmt.Sprintf("node=%s interface=%s ips=%v", v.Spec.Node, v.Spec.Interface, v.Spec.IPNetworks)
	case *model.FloatingIP:
		s := fmt.Sprintf("ip=%s endpoint=%s", v.Spec.IP, v.Spec.Endpoint)
		if v.Spec.FixedIP.IsValid() {
			s += fmt.Sprintf(" fixedIP=%s", v.Spec.FixedIP)
		}
		return s
	case *model.Config:
		return fmt.Sprintf("vxlanVNI=%d vxlanPort=%d", v.Spec.VXLANVNI, v.Spec.VXLANPort)
	}
	return ""
}

// liveNodes returns the nodes whose agents hold their lease, or nil when
// the datastore keeps no liveness (a file datastore).
func liveNodes(ctx context.Context, ds model.Datastore) (map[string]bool, error) {
	lv, ok := ds.(model.Liveness)
	if !ok {
		return nil, nil
	}
	live, err := lv.Live(ctx)
	if errors.Is(err, model.ErrNotImplemented) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node liveness: %w", err)
	}
	if live == nil {
		live = map[string]bool{}
	}
	return live, nil
}

// nodeRow is the table view of a Node: the generic columns and LIVE.
type nodeRow struct {
	Kind   string `table:"KIND"`
	Name   string `table:"NAME"`
	Detail string `table:"SPEC"`
	Live   string `table:"LIVE"`
}

// nodeOut is a Node as JSON and YAML print it: the resource and, when the
// datastore keeps liveness, status.live. apply ignores status (see
// withoutStatus), so the output still applies back.
type nodeOut struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   model.Metadata `json:"metadata"`
	Spec       model.NodeSpec `json:"spec"`
	Status     *nodeStatusOut `json:"status,omitempty"`
}

type nodeStatusOut struct {
	// Live says the node's agent keeps its lease in the datastore.
	Live bool `json:"live"`
}

// getNodes prints nodes with their liveness; live is nil when the
// datastore has none ("-" in the table, no status in JSON and YAML).
func getNodes(w io.Writer, format string, rs []model.Resource, live map[string]bool) error {
	out := make([]nodeOut, 0, len(rs))
	rows := make([]nodeRow, 0, len(rs))
	for _, r := range rs {
		n, ok := r.(*model.Node)
		if !ok {
			continue
		}
		no := nodeOut{APIVersion: model.APIVersion, Kind: model.KindNode, Metadata: n.Metadata, Spec: n.Spec}
		row := nodeRow{Kind: model.KindNode, Name: n.Metadata.Name, Detail: summary(n), Live: "-"}
		if live != nil {
			no.Status = &nodeStatusOut{Live: live[n.Metadata.Name]}
			row.Live = "no"
			if live[n.Metadata.Name] {
				row.Live = "yes"
			}
		}
		out = append(out, no)
		rows = append(rows, row)
	}
	switch format {
	case "json":
		return render(w, "json", out)
	case "yaml":
		for i, n := range out {
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			if err := writeYAML(w, n); err != nil {
				return err
			}
		}
		return nil
	}
	return render(w, "table", rows)
}

// withoutStatus removes the top-level "status" of every document in b:
// status is output only (calyxctl get nodes prints status.live), so what
// get printed applies back. Input it cannot parse is returned as it is,
// for model.Decode to report.
func withoutStatus(b []byte) []byte {
	if !bytes.Contains(b, []byte("status")) {
		return b
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	changed := false
	for {
		n := new(yaml.Node)
		err := dec.Decode(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return b
		}
		root := n
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		if root.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(root.Content); i += 2 {
				if root.Content[i].Kind == yaml.ScalarNode && root.Content[i].Value == "status" {
					root.Content = append(root.Content[:i:i], root.Content[i+2:]...)
					changed = true
					break
				}
			}
		}
		if n.Kind == yaml.DocumentNode && len(n.Content) == 0 {
			// An empty document stays one, so errors keep their
			// document numbers.
			n = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
		}
		docs = append(docs, n)
	}
	if !changed {
		return b
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return b
		}
	}
	if err := enc.Close(); err != nil {
		return b
	}
	return buf.Bytes()
}
