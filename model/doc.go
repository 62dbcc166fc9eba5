// Package model defines calyx's resources (IPPool, Node, Subnet,
// WorkloadEndpoint, FloatingIP, NetworkPolicy, Config, IPAMBlock,
// BGPConfiguration, BGPPeer), decodes and validates their calicoctl-shaped
// YAML, and stores them in a datastore
// that can be watched: a directory of files on one machine (FileStore) or
// etcd v3 for many hosts (EtcdStore). Both offer compare-and-swap on single
// resources (Versioned) and narrow reads of a kind or of a node's IPAM
// blocks (Lister); the etcd store also tracks which nodes are live
// (Liveness) and lets one process at a time do a cluster-wide job
// (Elector).
//
// Resources are treated as immutable once decoded or stored: a Snapshot
// shares resource pointers between clones, so code that wants to change a
// resource builds a new one and Puts it.
package model
