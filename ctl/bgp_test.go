package ctl

import (
	"strings"
	"testing"
)

const bgpModel = `apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-a, labels: {rack: a}}
spec: {ipv4Address: 10.30.0.10/24}
---
apiVersion: calyx.io/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 65000, nodeToNodeMeshEnabled: false}
---
apiVersion: calyx.io/v1
kind: BGPPeer
metadata: {name: gateway}
spec: {peerIP: 192.0.2.1, asNumber: 64600, password: {file: /etc/calyx/gw.key}}
---
apiVersion: calyx.io/v1
kind: BGPPeer
metadata: {name: tor-a}
spec: {peerIP: 10.30.0.1, asNumber: 65010, nodeSelector: "rack == 'a'"}
---
apiVersion: calyx.io/v1
kind: BGPPeer
metadata: {name: tor-b}
spec: {peerIP: 10.30.1.1, asNumber: 65010, node: host-b}
`

func TestBGPApplyGet(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, "", "get", "bgppeers"); r.code != 0 || r.out != "NAME  PEERIP  NODE  ASN\n" {
		t.Fatalf("get bgppeers on an empty store: %d %q %q", r.code, r.out, r.err)
	}
	if r := run(t, ds, bgpModel, "apply", "-f", "-"); r.code != 0 || !strings.Contains(r.out, "applied BGPPeer/tor-b\n") {
		t.Fatalf("apply: %d %q %q", r.code, r.out, r.err)
	}
	wantPeers := "NAME     PEERIP     NODE         ASN\n" +
		"gateway  192.0.2.1  (global)     64600\n" +
		"tor-a    10.30.0.1  rack == 'a'  65010\n" +
		"tor-b    10.30.1.1  host-b       65010\n"
	for _, kind := range []string{"bgppeers", "BGPPeer", "bgppeer"} {
		if r := run(t, ds, "", "get", kind); r.code != 0 || r.out != wantPeers {
			t.Errorf("get %s: %d %q\n%s\nwant\n%s", kind, r.code, r.err, r.out, wantPeers)
		}
	}
	wantConfig := "NAME     LOGSEVERITY  MESHENABLED  ASNUMBER\ndefault  Info         false        65000\n"
	for _, kind := range []string{"bgpconfigurations", "bgpconfig", "BGPConfiguration"} {
		if r := run(t, ds, "", "get", kind); r.code != 0 || r.out != wantConfig {
			t.Errorf("get %s: %d %q\n%s\nwant\n%s", kind, r.code, r.err, r.out, wantConfig)
		}
	}

	// YAML output applies back and changes nothing.
	r := run(t, ds, "", "get", "bgppeers", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.out, "file: /etc/calyx/gw.key") || !strings.Contains(r.out, "sourceAddress: UseNodeIP") {
		t.Fatalf("get -o yaml: %d %q\n%s", r.code, r.err, r.out)
	}
	before := snapshotDir(t, ds)
	if back := run(t, ds, r.out, "apply", "-f", "-"); back.code != 0 {
		t.Fatalf("re-applying get -o yaml failed: %s\n%s", back.err, r.out)
	}
	assertSameDir(t, before, snapshotDir(t, ds))

	// A peer at a node's own address is refused, with the reason.
	bad := "apiVersion: calyx.io/v1\nkind: BGPPeer\nmetadata: {name: oops}\nspec: {peerIP: 10.30.0.10, asNumber: 65000}\n"
	if r := run(t, ds, bad, "apply", "-f", "-"); r.code == 0 || !strings.Contains(r.err, "BGPPeer/oops: spec.peerIP: 10.30.0.10 is the underlay address of Node/host-a") {
		t.Errorf("apply of a peer at a node's address: %d %q", r.code, r.err)
	}
	if r := run(t, ds, "", "delete", "bgpconfiguration", "default"); r.code != 0 {
		t.Fatalf("delete: %d %q", r.code, r.err)
	}
	if r := run(t, ds, "", "get", "bgpconfigurations"); r.code != 0 || r.out != "NAME  LOGSEVERITY  MESHENABLED  ASNUMBER\n" {
		t.Errorf("get after delete: %d %q", r.code, r.out)
	}
}
