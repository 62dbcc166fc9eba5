// Package model defines calyx's resources (IPPool, Node, WorkloadEndpoint,
// FloatingIP, NetworkPolicy, Config), decodes and validates their
// calicoctl-shaped YAML, and stores them in a datastore that can be
// watched.
//
// Resources are treated as immutable once decoded or stored: a Snapshot
// shares resource pointers between clones, so code that wants to change a
// resource builds a new one and Puts it.
package model
