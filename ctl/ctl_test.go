package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type result struct {
	code     int
	out, err string
}

func run(t *testing.T, ds string, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"--datastore", "file://" + ds}, args...)
	code := Run(context.Background(), full, IO{In: strings.NewReader(stdin), Out: &out, Err: &errb})
	return result{code, out.String(), errb.String()}
}

const goodModel = `apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: wl}
spec: {cidr: 10.65.0.0/16}
---
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata: {name: web-1, labels: {app: web}}
spec: {node: host-a, interface: tap1, mac: "02:00:00:00:00:01", ipNetworks: [10.65.0.2/32]}
`

func TestApplyGetDelete(t *testing.T) {
	ds := t.TempDir()
	r := run(t, ds, goodModel, "apply", "-f", "-")
	if r.code != 0 {
		t.Fatalf("apply: %d %s", r.code, r.err)
	}
	if !strings.Contains(r.out, "applied WorkloadEndpoint/web-1") {
		t.Errorf("apply output: %q", r.out)
	}

	r = run(t, ds, "", "get", "WorkloadEndpoints", "-o", "json")
	if r.code != 0 {
		t.Fatalf("get: %s", r.err)
	}
	var objs []map[string]any
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil {
		t.Fatalf("get -o json is not a JSON array: %v\n%s", err, r.out)
	}
	if len(objs) != 1 || objs[0]["kind"] != "WorkloadEndpoint" {
		t.Fatalf("get -o json = %v", objs)
	}
	spec := objs[0]["spec"].(map[string]any)
	for _, k := range []string{"node", "interface", "mac", "ipNetworks"} {
		if _, ok := spec[k]; !ok {
			t.Errorf("spec has no camelCase key %q: %v", k, spec)
		}
	}

	r = run(t, ds, "", "get", "ippool")
	if r.code != 0 || !strings.Contains(r.out, "wl") || !strings.Contains(r.out, "cidr=10.65.0.0/16") {
		t.Errorf("get ippool table: %d %q %q", r.code, r.out, r.err)
	}

	// YAML output applies back unchanged.
	r = run(t, ds, "", "get", "workloadendpoint", "web-1", "-o", "yaml")
	if r.code != 0 {
		t.Fatal(r.err)
	}
	if back := run(t, ds, r.out, "apply", "-f", "-"); back.code != 0 {
		t.Fatalf("re-applying get -o yaml failed: %s\n%s", back.err, r.out)
	}

	if r = run(t, ds, "", "delete", "workloadendpoint", "web-1"); r.code != 0 {
		t.Fatalf("delete: %s", r.err)
	}
	if r = run(t, ds, "", "get", "workloadendpoint", "web-1"); r.code != 1 || !strings.Contains(r.err, "not found") {
		t.Errorf("get after delete: %d %q", r.code, r.err)
	}
}

// snapshotDir returns every file under dir with its content.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			out[p] = string(b)
		}
		return nil
	})
	return out
}

func TestApplyRejectsBadInputAndChangesNothing(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"bad cidr", "kind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.300.0.0/16}", "spec.cidr"},
		{"unknown field", "kind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.66.0.0/16, colour: red}", "spec.colour"},
		{"duplicate ip", "kind: WorkloadEndpoint\nmetadata: {name: web-2}\nspec: {node: host-a, interface: tap2, ipNetworks: [10.65.0.2/32]}", "spec.ipNetworks[0]"},
		{"ip in no pool", "kind: WorkloadEndpoint\nmetadata: {name: web-3}\nspec: {node: host-a, interface: tap3, ipNetworks: [10.99.0.1/32]}", "spec.ipNetworks[0]"},
		{"both encaps", "kind: IPPool\nmetadata: {name: p3}\nspec: {cidr: 10.67.0.0/16, ipipMode: Always, vxlanMode: Always}", "vxlanMode"},
	}
	ds := t.TempDir()
	if r := run(t, ds, goodModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	before := snapshotDir(t, ds)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A valid document first: the whole apply must still be refused.
			doc := "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: ok}\nspec: {cidr: 10.70.0.0/16}\n---\napiVersion: calyx.io/v1\n" + tc.doc + "\n"
			r := run(t, ds, doc, "apply", "-f", "-")
			if r.code != 1 {
				t.Fatalf("exit = %d, want 1; stderr %q", r.code, r.err)
			}
			if !strings.Contains(r.err, tc.want) {
				t.Errorf("stderr %q does not name %s", r.err, tc.want)
			}
			after := snapshotDir(t, ds)
			if len(after) != len(before) {
				t.Fatalf("datastore changed: %d files before, %d after", len(before), len(after))
			}
			for p, c := range before {
				if after[p] != c {
					t.Fatalf("datastore file %s changed", p)
				}
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	ds := t.TempDir()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"get"},
		{"get", "gadgets"},
		{"apply"},
		{"routes"},
		{"node"},
		{"node", "dump"},
		{"-o", "xml", "version"},
	} {
		if r := run(t, ds, "", args...); r.code != 2 || !strings.Contains(r.err, "usage:") {
			t.Errorf("%v: exit %d, stderr %q; want 2 with usage", args, r.code, r.err)
		}
	}
}

func TestVersion(t *testing.T) {
	r := run(t, t.TempDir(), "", "version", "-o", "json")
	var v []map[string]string
	if err := json.Unmarshal([]byte(r.out), &v); err != nil || len(v) != 1 || v[0]["version"] == "" {
		t.Fatalf("version -o json = %q (%v)", r.out, err)
	}
}

func TestDumpWithoutPinsNamesTheMap(t *testing.T) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"--bpffs", t.TempDir(), "routes", "dump"}, IO{Out: &out, Err: &errb})
	if code != 1 || !strings.Contains(errb.String(), "cx_") {
		t.Fatalf("exit %d, stderr %q: want the missing map named", code, errb.String())
	}
}
