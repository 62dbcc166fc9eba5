// Package bgpstatus holds what the agent reports of its BGP speaker: the JSON
// the agent serves on /bgp and /bgp/routes (on its --metrics address) and
// calyxctl's node status and bgp routes read. It has no dependencies, so that
// calyxctl does not link the speaker.
package bgpstatus

import (
	"net/netip"
	"time"
)

// Paths on the agent's HTTP listener.
const (
	// ReportPath answers a Report.
	ReportPath = "/bgp"
	// RoutesPath answers []Route: with ?peer=ADDR the routes received from
	// (received=1) or sent to the peer, without it the routes this node
	// originates (or, with received=1, every best path learned).
	RoutesPath = "/bgp/routes"
)

// Peer types, as calicoctl's node status shows them.
const (
	PeerTypeMesh         = "node-to-node mesh"
	PeerTypeGlobal       = "global"
	PeerTypeNodeSpecific = "node specific"
)

// Report is the agent's BGP state.
type Report struct {
	// Running says the speaker runs; Reason says why not when it does not
	// (no BGPConfiguration, the node has no IPv4 address, ...).
	Running  bool       `json:"running"`
	Reason   string     `json:"reason,omitempty"`
	ASNumber uint32     `json:"asNumber,omitempty"`
	RouterID netip.Addr `json:"routerID,omitzero"`
	Peers    []Peer     `json:"peers"`
	// Advertised is how many prefixes this node originates.
	Advertised int `json:"advertised"`
	// Disagreements are workload and floating-IP routes on which BGP and the
	// datastore differ.
	Disagreements []Disagreement `json:"disagreements"`
	// FIB are the learned routes outside every pool, for the kernel FIB.
	FIB []FIBRoute `json:"fib"`
	// PeerErrors are the configured peers the speaker could not use (a
	// password file that cannot be read, say).
	PeerErrors []string `json:"peerErrors,omitempty"`
}

// Peer is one row of calicoctl's node status table, plus prefix counts.
type Peer struct {
	Address netip.Addr `json:"peerAddress"`
	Type    string     `json:"peerType"`
	// State is BIRD's protocol state as calicoctl shows it: "up" when
	// Established, "start" otherwise, "down" when administratively down.
	State string `json:"state"`
	// Since is when the session last changed state (zero if it never did).
	Since time.Time `json:"since,omitzero"`
	// Info is the BGP FSM state (Idle, Connect, Active, OpenSent,
	// OpenConfirm, Established), followed by the last disconnect reason
	// when not Established.
	Info string `json:"info"`
	// Session is the BGP FSM state alone (one of SessionStates).
	Session             string `json:"session"`
	Established         bool   `json:"established"`
	PrefixesReceived    uint64 `json:"prefixesReceived"`
	PrefixesAdvertised  uint64 `json:"prefixesAdvertised"`
	SessionFlaps        uint64 `json:"sessionFlaps"`
	LastDisconnectCause string `json:"lastDisconnectCause,omitempty"`
}

// SessionStates are the BGP FSM's states (RFC 4271, 8.2.2), as Peer.Session
// names them.
var SessionStates = []string{"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"}

// Route is one BGP route.
type Route struct {
	Prefix  netip.Prefix `json:"prefix"`
	NextHop netip.Addr   `json:"nextHop"`
	// Peer is the peer it came from or goes to; zero for this node's own.
	Peer netip.Addr `json:"peer,omitzero"`
	// Stale: the peer restarts gracefully and has not re-advertised it yet.
	Stale bool `json:"stale,omitempty"`
}

// Disagreement is a workload route on which BGP and the datastore differ.
type Disagreement struct {
	Prefix netip.Prefix `json:"prefix"`
	// Learned is the next hop learned by BGP; zero when BGP has no route.
	Learned netip.Addr `json:"learned,omitzero"`
	// Peer is the peer the learned route came from.
	Peer netip.Addr `json:"peer,omitzero"`
	// Expected is the datastore's next hop; zero when the datastore has no
	// route for the prefix.
	Expected netip.Addr `json:"expected,omitzero"`
}

// FIBRoute is a learned route outside every pool.
type FIBRoute struct {
	Prefix  netip.Prefix `json:"prefix"`
	NextHop netip.Addr   `json:"nextHop"`
	// Via is the directly reachable gateway the kernel route uses (NextHop
	// itself, or the router towards a next hop on another subnet); zero when
	// the route is not installed.
	Via netip.Addr `json:"via,omitzero"`
	// Installed: in the kernel FIB; Error says why not otherwise.
	Installed bool   `json:"installed"`
	Error     string `json:"error,omitempty"`
}
