// Package bgp is calyx's BGP speaker: GoBGP (github.com/osrg/gobgp/v4) embedded in the
// agent, configured through its Go API, plus the pure functions that decide what a node
// advertises (Advertise) and what it does with what it learns (SplitLearned).
//
// The package knows nothing of the datastore model: the agent turns BGPConfiguration,
// BGPPeer, Node and IPPool resources into Config, Peer and Pool values.
//
// # Graceful restart (RFC 4724), as GoBGP does it
//
// Every peer gets the graceful-restart configuration (api.Peer.GracefulRestart: Enabled,
// RestartTime = Config.GracefulRestartSeconds) and, per address family,
// MpGracefulRestart.Config.Enabled: without the per-family flag GoBGP announces the
// capability with no family tuple and the peers keep nothing. GoBGP has no global
// graceful-restart switch that matters here (api.Global.GracefulRestart is not read by
// StartBgp); it is per neighbor.
//
// Receiving side (a peer restarts): with the capability negotiated, a session lost by a
// read or write failure or a hold-timer expiry (not by a NOTIFICATION) marks the peer's
// routes stale and keeps them for the restart time the peer announced; its End-of-RIB
// then drops the stale routes it did not re-advertise.
//
// Restarting side (this agent restarted): the old speaker must close its sessions
// without a NOTIFICATION, which is StopBgp with AllowGracefulRestart (Stop(false)) or a
// killed process. NotificationEnabled (RFC 8538, graceful restart after a NOTIFICATION
// too) is left off, so that Stop(true)'s Cease really ends the session and the peers
// drop the routes; LongLivedEnabled (RFC 9494) is off too, the restart time is the only
// timer. The new speaker sets GracefulRestart.LocalRestarting (Config.Restarting): GoBGP
// then announces the Restart State bit and the Forwarding State bit of each family (a
// peer such as BIRD flushes the stale routes at once when the Forwarding bit is clear),
// and defers its UPDATEs until every peer's End-of-RIB or the deferral time
// (GracefulRestart.DeferralTime, set to half the restart time), after which it sends
// its routes and its own End-of-RIB. GoBGP has no flag that holds the first UPDATEs
// until the application has added its routes; it sends the local RIB and End-of-RIB as
// soon as a session establishes (or the deferral ends). Speaker therefore configures no
// peer until the first SetAdvertisements call: the first End-of-RIB follows the full
// set, and nothing of a node is dropped by its peers across a restart.
//
// # MD5
//
// Peer.Password goes to api.PeerConf.AuthPassword: GoBGP sets TCP_MD5SIG for the peer's
// address on its listening sockets and on its outgoing connections, so a password
// mismatch leaves the SYNs unanswered and the session in Active/Connect.
//
// # Global changes
//
// GoBGP cannot change the AS number, router ID or listen settings of a running instance;
// Update stops it gracefully and starts a new one, announced as restarting, with the
// same peers and routes.
package bgp
