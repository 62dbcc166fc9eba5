package lab

import (
	"net"

	"github.com/calyxnet/calyx/loader"
)

// TCPrograms returns how many programs run on iface's TC ingress and
// egress hooks in network namespace ns, attached by TCX or as clsact
// filters alike, as the kernel says (BPF_PROG_QUERY, the filter list), not
// calyx's own maps. Debian's bpftool predates TCX.
func TCPrograms(ns, iface string) (ingress, egress int, err error) {
	err = InNS(ns, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		in, err := loader.AttachedPrograms(ifc.Index, loader.HookIngress)
		if err != nil {
			return err
		}
		out, err := loader.AttachedPrograms(ifc.Index, loader.HookEgress)
		ingress, egress = len(in), len(out)
		return err
	})
	return ingress, egress, err
}
