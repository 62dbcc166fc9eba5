package ctl

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/model"
)

const nodesModel = `apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-a, labels: {rack: r1}}
spec: {ipv4Address: 10.30.0.11/24}
---
apiVersion: calyx.io/v1
kind: Node
metadata: {name: host-b}
spec: {ipv4Address: 10.30.0.12/24}
`

// A file datastore keeps no liveness: LIVE is "-" and JSON has no status.
func TestGetNodesWithoutLiveness(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, nodesModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	want := "KIND  NAME    SPEC                       LIVE\n" +
		"Node  host-a  ipv4Address=10.30.0.11/24  -\n" +
		"Node  host-b  ipv4Address=10.30.0.12/24  -\n"
	if r := run(t, ds, "", "get", "nodes"); r.code != 0 || r.out != want {
		t.Errorf("get nodes: %d %q\n%s\nwant\n%s", r.code, r.err, r.out, want)
	}
	r := run(t, ds, "", "get", "node", "host-a", "-o", "json")
	var objs []map[string]any
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil || len(objs) != 1 {
		t.Fatalf("get node -o json: %v\n%s", err, r.out)
	}
	if _, ok := objs[0]["status"]; ok || objs[0]["kind"] != "Node" || objs[0]["spec"].(map[string]any)["ipv4Address"] != "10.30.0.11/24" {
		t.Errorf("get node -o json = %v", objs[0])
	}
	if objs[0]["metadata"].(map[string]any)["labels"].(map[string]any)["rack"] != "r1" {
		t.Errorf("labels missing: %v", objs[0])
	}
}

// With liveness the table says yes/no and JSON/YAML carry status.live;
// the YAML still applies back (status is output only).
func TestGetNodesWithLiveness(t *testing.T) {
	rs, err := model.Decode(strings.NewReader(nodesModel))
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{"host-a": true}

	var b bytes.Buffer
	if err := getNodes(&b, "table", rs, live); err != nil {
		t.Fatal(err)
	}
	want := "KIND  NAME    SPEC                       LIVE\n" +
		"Node  host-a  ipv4Address=10.30.0.11/24  yes\n" +
		"Node  host-b  ipv4Address=10.30.0.12/24  no\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant\n%s", b.String(), want)
	}

	b.Reset()
	if err := getNodes(&b, "json", rs, live); err != nil {
		t.Fatal(err)
	}
	var objs []struct {
		Kind     string         `json:"kind"`
		Metadata model.Metadata `json:"metadata"`
		Spec     map[string]any `json:"spec"`
		Status   *struct {
			Live *bool `json:"live"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b.Bytes(), &objs); err != nil || len(objs) != 2 {
		t.Fatalf("json: %v\n%s", err, b.String())
	}
	for i, want := range []bool{true, false} {
		o := objs[i]
		if o.Kind != "Node" || o.Status == nil || o.Status.Live == nil || *o.Status.Live != want || o.Spec["ipv4Address"] == nil {
			t.Errorf("json object %d = %+v, want status.live %v", i, o, want)
		}
	}

	b.Reset()
	if err := getNodes(&b, "yaml", rs, live); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "status:\n  live: true\n") || !strings.Contains(b.String(), "rack: r1") {
		t.Errorf("yaml:\n%s", b.String())
	}
	ds := t.TempDir()
	if r := run(t, ds, b.String(), "apply", "-f", "-"); r.code != 0 {
		t.Fatalf("applying get nodes -o yaml: %s\n%s", r.err, b.String())
	}
	r := run(t, ds, "", "-o", "json", "get", "node", "host-a")
	if !strings.Contains(r.out, `"rack": "r1"`) || !strings.Contains(r.out, `"10.30.0.11/24"`) {
		t.Errorf("after re-apply: %s", r.out)
	}
}

func TestWithoutStatus(t *testing.T) {
	plain := []byte("kind: Node\nmetadata: {name: a}\nspec: {}\n")
	if got := withoutStatus(plain); !bytes.Equal(got, plain) {
		t.Errorf("input without status rewritten: %q", got)
	}
	// Document numbers survive the rewrite: the empty second document
	// still counts.
	in := "apiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: a}\nspec: {ipv4Address: 10.30.0.11/24}\nstatus: {live: true}\n" +
		"---\n---\napiVersion: calyx.io/v1\nkind: Node\nmetadata: {name: b}\nspec: {ipv4Address: 10.30.0.12/24, colour: red}\nstatus: {live: false}\n"
	_, err := model.Decode(bytes.NewReader(withoutStatus([]byte(in))))
	if err == nil || !strings.Contains(err.Error(), "document 3") || !strings.Contains(err.Error(), "spec.colour") || strings.Contains(err.Error(), "status") {
		t.Errorf("decode after withoutStatus: %v", err)
	}
	// Unparseable input goes to Decode as it is, which reports it.
	bad := []byte("status: [\n")
	if got := withoutStatus(bad); !bytes.Equal(got, bad) {
		t.Errorf("bad input rewritten: %q", got)
	}
}

func TestEtcdTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-ca", ca, "get", "nodes"}, "need an etcd:// datastore"},
		{[]string{"--datastore", "etcd://127.0.0.1:1", "--etcd-cert", ca, "get", "nodes"}, "go together"},
		{[]string{"--datastore", "etcd://127.0.0.1:1", "--etcd-ca=" + filepath.Join(dir, "missing.pem"), "get", "nodes"}, "--etcd-ca"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"--datastore", "file://" + dir}, tc.args...)
		code := Run(t.Context(), args, IO{In: strings.NewReader(""), Out: &out, Err: &errb})
		if code != 1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
