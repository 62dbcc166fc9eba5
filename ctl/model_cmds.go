package ctl

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/calyxnet/calyx/model"
)

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
	rs, err := model.Decode(r)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%s: no resources in %s", verb, args[1])
	}
	return rs, nil
}

func apply(ctx context.Context, o Options, args []string, stdio IO) error {
	rs, err := readInput(stdio, args, "apply")
	if err != nil {
		return err
	}
	ds, err := model.Open(o.Datastore)
	if err != nil {
		return err
	}
	defer ds.Close()
	if err := ds.Apply(ctx, rs); err != nil {
		return err
	}
	for _, r := range rs {
		fmt.Fprintf(stdio.Out, "applied %s\n", model.RefOf(r))
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
	ds, err := model.Open(o.Datastore)
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

func get(ctx context.Context, o Options, args []string, stdio IO) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("get: want 'get KIND [NAME]'")
	}
	kind, err := model.ParseKind(args[0])
	if err != nil {
		return usagef("get: %v", err)
	}
	ds, err := model.Open(o.Datastore)
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
	switch o.Output {
	case "json":
		return render(stdio.Out, "json", rs)
	case "yaml":
		return writeYAMLDocs(stdio.Out, rs)
	}
	if kind == model.KindFloatingIP {
		return render(stdio.Out, "table", floatingIPRows(snap, rs))
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
