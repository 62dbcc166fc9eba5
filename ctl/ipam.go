package ctl

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calyxnet/calyx/ipam"
	"github.com/calyxnet/calyx/model"
)

// newHandle is the handle `ipam allocate` records when none is given: a
// new one each time (a handle's allocation is idempotent: with one fixed
// default, a second allocate would return the first's address).
func newHandle() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "calyxctl-" + hex.EncodeToString(b[:])
}

// count is a number that prints as itself in a table, 0 included.
type count uint64

func (c count) String() string { return strconv.FormatUint(uint64(c), 10) }

// blockRow is one line of `ipam show`: a block, the node holding it and how
// many of its addresses are allocated.
type blockRow struct {
	CIDR string `json:"cidr" yaml:"cidr" table:"CIDR"`
	Pool string `json:"pool" yaml:"pool" table:"POOL"`
	Node string `json:"node" yaml:"node" table:"NODE"`
	Used count  `json:"used" yaml:"used" table:"USED"`
	Size count  `json:"size" yaml:"size" table:"SIZE"`
}

// allocationRow is what `ipam allocate -o json|yaml` prints.
type allocationRow struct {
	Address string `json:"address" yaml:"address" table:"ADDRESS"`
	Node    string `json:"node" yaml:"node" table:"NODE"`
	Handle  string `json:"handle" yaml:"handle" table:"HANDLE"`
}

func ipamCmd(ctx context.Context, o Options, args []string, stdio IO) error {
	if len(args) == 0 {
		return usagef("ipam: want 'ipam show', 'ipam allocate --node NODE [--handle H]' or 'ipam release ADDR|--handle H'")
	}
	switch args[0] {
	case "show":
		if len(args) != 1 {
			return usagef("ipam show takes no arguments")
		}
		return ipamShow(ctx, o, stdio)
	case "allocate":
		return ipamAllocate(ctx, o, args[1:], stdio)
	case "release":
		switch {
		case len(args) == 3 && args[1] == "--handle":
			return ipamReleaseHandle(ctx, o, args[2], stdio)
		case len(args) == 2 && strings.HasPrefix(args[1], "--handle="):
			return ipamReleaseHandle(ctx, o, strings.TrimPrefix(args[1], "--handle="), stdio)
		case len(args) != 2 || strings.HasPrefix(args[1], "-"):
			return usagef("ipam release: want 'ipam release ADDR' or 'ipam release --handle H'")
		}
		return ipamRelease(ctx, o, args[1], stdio)
	}
	return usagef("ipam: unknown subcommand %q (want show, allocate or release)", args[0])
}

// ipamStore opens the datastore for IPAM's compare-and-swap writes.
func ipamStore(o Options) (ipam.Store, func(), error) {
	ds, err := o.openDatastore()
	if err != nil {
		return nil, nil, err
	}
	st, ok := ds.(ipam.Store)
	if !ok {
		ds.Close()
		return nil, nil, fmt.Errorf("datastore %s does not support compare-and-swap writes, which IPAM needs", o.Datastore)
	}
	return st, func() { ds.Close() }, nil
}

func ipamShow(ctx context.Context, o Options, stdio IO) error {
	ds, err := o.openDatastore()
	if err != nil {
		return err
	}
	defer ds.Close()
	snap, err := ds.Snapshot(ctx)
	if err != nil {
		return err
	}
	blocks := make([]*model.IPAMBlock, 0, len(snap.Blocks))
	for _, b := range snap.Blocks {
		blocks = append(blocks, b)
	}
	slices.SortFunc(blocks, func(a, b *model.IPAMBlock) int {
		x, y := a.Spec.CIDR, b.Spec.CIDR
		return cmp.Or(cmp.Compare(x.Addr().BitLen(), y.Addr().BitLen()), x.Addr().Compare(y.Addr()),
			cmp.Compare(x.Bits(), y.Bits()), strings.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	rows := make([]blockRow, 0, len(blocks))
	for _, b := range blocks {
		rows = append(rows, blockRow{
			CIDR: b.Spec.CIDR.String(),
			Pool: b.Spec.Pool,
			Node: b.Spec.Node,
			Used: count(len(b.Spec.Allocations)),
			Size: count(ipam.BlockSize(b.Spec.CIDR)),
		})
	}
	return render(stdio.Out, o.Output, rows)
}

func ipamAllocate(ctx context.Context, o Options, args []string, stdio IO) error {
	var node, handle string
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		var dst *string
		switch name {
		case "--node":
			dst = &node
		case "--handle":
			dst = &handle
		default:
			return usagef("ipam allocate: unexpected %q (want --node NODE [--handle H])", args[i])
		}
		if !hasVal {
			if i+1 >= len(args) {
				return usagef("ipam allocate: %s needs a value", name)
			}
			i++
			val = args[i]
		}
		*dst = val
	}
	if node == "" {
		return usagef("ipam allocate: --node NODE is required")
	}
	if handle == "" {
		handle = newHandle()
	}
	ds, done, err := ipamStore(o)
	if err != nil {
		return err
	}
	defer done()
	a, err := ipam.Allocate(ctx, ds, node, handle)
	if err != nil {
		return err
	}
	if o.Output == "table" {
		_, err := fmt.Fprintln(stdio.Out, a)
		return err
	}
	return render(stdio.Out, o.Output, []allocationRow{{Address: a.String(), Node: node, Handle: handle}})
}

func ipamRelease(ctx context.Context, o Options, arg string, stdio IO) error {
	a, err := netip.ParseAddr(arg)
	if err != nil {
		return usagef("ipam release: %q is not an IP address", arg)
	}
	ds, done, err := ipamStore(o)
	if err != nil {
		return err
	}
	defer done()
	if err := ipam.Release(ctx, ds, a); err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "released %s\n", a)
	return nil
}

func ipamReleaseHandle(ctx context.Context, o Options, handle string, stdio IO) error {
	if handle == "" {
		return usagef("ipam release: --handle needs a value")
	}
	ds, done, err := ipamStore(o)
	if err != nil {
		return err
	}
	defer done()
	a, err := ipam.ReleaseHandle(ctx, ds, handle)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "released %s (handle %s)\n", a, handle)
	return nil
}
