package model

import (
	"context"
	"fmt"
)

// Lister reads parts of the model, for callers such as IPAM that need a
// few resources of a model too large to read whole on every call. Every
// Datastore implements it; the etcd store reads only the keys asked for,
// the file store answers from its cached model.
type Lister interface {
	// List returns the resources of kind (any spelling ParseKind
	// accepts) as Snapshot.Resources lists them, sorted by name. Values
	// that do not parse are skipped. An unknown kind is an error.
	List(ctx context.Context, kind string) ([]Resource, error)
	// Names returns the names of the stored resources of kind, sorted.
	// An unknown kind is an error.
	Names(ctx context.Context, kind string) ([]string, error)
	// NodeBlocks returns the IPAMBlocks whose spec.node is node, sorted
	// by name. An invalid node name is an error.
	NodeBlocks(ctx context.Context, node string) ([]*IPAMBlock, error)
}

var (
	_ Lister = (*FileStore)(nil)
	_ Lister = (*EtcdStore)(nil)
)

// List returns the resources of kind from the model Snapshot reads.
func (f *FileStore) List(ctx context.Context, kind string) ([]Resource, error) {
	k, err := ParseKind(kind)
	if err != nil {
		return nil, err
	}
	s, err := f.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return s.Resources(k), nil
}

// Names returns the names of the resources of kind in the model Snapshot
// reads (a file that does not parse is not listed).
func (f *FileStore) Names(ctx context.Context, kind string) ([]string, error) {
	rs, err := f.List(ctx, kind)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Meta().Name
	}
	return names, nil
}

// NodeBlocks returns node's blocks from the model Snapshot reads.
func (f *FileStore) NodeBlocks(ctx context.Context, node string) ([]*IPAMBlock, error) {
	if !validName(node) {
		return nil, fmt.Errorf("blocks of node %q: not a valid node name", node)
	}
	rs, err := f.List(ctx, KindIPAMBlock)
	if err != nil {
		return nil, err
	}
	var out []*IPAMBlock
	for _, r := range rs {
		if b := r.(*IPAMBlock); b.Spec.Node == node {
			out = append(out, b)
		}
	}
	return out, nil
}
