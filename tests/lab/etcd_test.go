package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEtcdNode: the lab's etcd sits on the fabric segment, a host behind the
// router reaches it, agents and calyxctl are pointed at it with the TLS
// flags, and it stops and starts with its data; Close removes it all.
func TestEtcdNode(t *testing.T) {
	RequireEtcd(t)
	l := newTestLab(t, Options{})
	if _, err := l.AddSegment(FabricSegment, DefaultUnderlay); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddSegment(RemoteSegment, RemoteUnderlay); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddHost("host-c", "10.30.1.13/24"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddRouter(MultiRouter, FabricSegment, RemoteSegment); err != nil {
		t.Fatal(err)
	}
	e, err := l.AddEtcd(EtcdOptions{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.URL() != "etcd://10.30.0.2:2379" || l.DatastoreURL() != e.URL() || e.Segment.Name != FabricSegment {
		t.Errorf("etcd at %s on %s; lab datastore %s", e.URL(), e.Segment.Name, l.DatastoreURL())
	}
	h, _ := l.Host("host-c")
	args := strings.Join(l.AgentArgs(h), " ")
	for _, want := range []string{"--datastore " + e.URL(), "--etcd-ca " + e.CAFile, "--etcd-cert " + e.CertFile, "--etcd-key " + e.KeyFile} {
		if !strings.Contains(args, want) {
			t.Errorf("agent args %q lack %q", args, want)
		}
	}
	ctl, err := l.CtlArgs("", "get", "nodes")
	if err != nil || !slices.Contains(ctl, "--etcd-ca") || !slices.Contains(ctl, e.URL()) {
		t.Errorf("calyxctl args %v (%v)", ctl, err)
	}
	for _, f := range []string{e.CAFile, e.CertFile, e.KeyFile} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}

	// host-c, on the other segment, reaches etcd through the router.
	c, err := DialTCP(h.NS, e.Endpoint(), 5*time.Second)
	if err != nil {
		t.Fatalf("host-c cannot reach etcd: %v", err)
	}
	c.Close()

	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	if e.Running() {
		t.Error("running after Stop")
	}
	if _, _, err := e.health(time.Second); err == nil {
		t.Error("etcd answers after Stop")
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if code, body, err := e.health(2 * time.Second); err != nil || code != 200 {
		t.Errorf("health after Start: %d %q %v", code, body, err)
	}
	if _, err := os.Stat(filepath.Join(e.DataDir, "member")); err != nil {
		t.Errorf("no data in %s: %v", e.DataDir, err)
	}
	log, _ := os.ReadFile(e.LogPath)
	if strings.Count(string(log), "=== calyx-lab:") != 3 {
		t.Errorf("etcd log lacks the start/stop markers:\n%s", log)
	}

	prefix := l.Prefix
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, prefix)
}
