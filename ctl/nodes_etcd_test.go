package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/model"
	"github.com/calyxnet/calyx/tests/etcdtest"
)

// calyxctl on an etcd over TLS (--etcd-ca, --etcd-cert, --etcd-key): get
// nodes says which nodes keep their lease, and the YAML it prints applies
// back.
func TestGetNodesOnEtcd(t *testing.T) {
	s := etcdtest.StartTLS(t)
	files := s.TLS()
	url := "etcd://" + s.Addr()
	ctl := func(stdin string, args ...string) result {
		t.Helper()
		var out, errb bytes.Buffer
		full := append([]string{"--datastore", url, "--etcd-ca", files.CA, "--etcd-cert", files.Cert, "--etcd-key", files.Key}, args...)
		code := Run(t.Context(), full, IO{In: strings.NewReader(stdin), Out: &out, Err: &errb})
		return result{code, out.String(), errb.String()}
	}
	if r := ctl(nodesModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("apply: %s", r.err)
	}

	// host-a's agent keeps its lease.
	ds, err := model.Open(url, model.WithTLS(files.CA, files.Cert, files.Key))
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ds.(model.Liveness).KeepAlive(ctx, "host-a", 5*time.Second)
	}()
	defer func() { cancel(); <-done }()

	want := "KIND  NAME    SPEC                       LIVE\n" +
		"Node  host-a  ipv4Address=10.30.0.11/24  yes\n" +
		"Node  host-b  ipv4Address=10.30.0.12/24  no\n"
	var r result
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r = ctl("", "get", "nodes"); r.code == 0 && r.out == want {
			break
		}
	}
	if r.code != 0 || r.out != want {
		t.Fatalf("get nodes: %d %q\n%s\nwant\n%s", r.code, r.err, r.out, want)
	}

	r = ctl("", "-o", "json", "get", "nodes")
	var objs []struct {
		Metadata model.Metadata `json:"metadata"`
		Status   *struct {
			Live bool `json:"live"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil || len(objs) != 2 {
		t.Fatalf("get nodes -o json: %v\n%s", err, r.out)
	}
	if objs[0].Status == nil || !objs[0].Status.Live || objs[1].Status == nil || objs[1].Status.Live {
		t.Errorf("status.live: %s", r.out)
	}

	r = ctl("", "-o", "yaml", "get", "node", "host-a")
	if r.code != 0 || !strings.Contains(r.out, "live: true") {
		t.Fatalf("get node -o yaml: %d %q\n%s", r.code, r.err, r.out)
	}
	if back := ctl(r.out, "apply", "-f", "-"); back.code != 0 {
		t.Fatalf("re-applying get -o yaml: %s\n%s", back.err, r.out)
	}

	// Without the client certificate etcd refuses calyxctl.
	var out, errb bytes.Buffer
	code := Run(t.Context(), []string{"--datastore", url, "--etcd-ca", files.CA, "get", "nodes"}, IO{Out: &out, Err: &errb})
	if code != 1 {
		t.Errorf("without a client certificate: exit %d, stdout %q", code, out.String())
	}
}
