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
		{"nat"},
		{"ct"},
		{"ct", "reset"},
		{"ct", "dump", "--proto", "sctp"},
		{"ct", "dump", "--port", "0"},
		{"ct", "dump", "--port"},
		{"ct", "dump", "--bogus"},
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

const fipModel = goodModel + `---
apiVersion: calyx.io/v1
kind: IPPool
metadata: {name: ext}
spec: {cidr: 198.51.100.0/24, external: true}
---
apiVersion: calyx.io/v1
kind: WorkloadEndpoint
metadata: {name: web-2}
spec: {node: host-a, interface: tap2, ipNetworks: [10.65.0.3/32, 10.65.0.4/32]}
---
apiVersion: calyx.io/v1
kind: FloatingIP
metadata: {name: web-1-fip}
spec: {ip: 198.51.100.10, endpoint: web-1}
---
apiVersion: calyx.io/v1
kind: FloatingIP
metadata: {name: web-2-fip}
spec: {ip: 198.51.100.11, endpoint: web-2, fixedIP: 10.65.0.4}
`

func TestFloatingIPApplyGetDelete(t *testing.T) {
	ds := t.TempDir()
	if r := run(t, ds, "", "get", "floatingips"); r.code != 0 || r.out != "NAME  IP  ENDPOINT  FIXED-IP\n" {
		t.Fatalf("get floatingips on an empty store: %d %q %q", r.code, r.out, r.err)
	}
	r := run(t, ds, fipModel, "apply", "-f", "-")
	if r.code != 0 {
		t.Fatalf("apply: %d %s", r.code, r.err)
	}
	if !strings.Contains(r.out, "applied FloatingIP/web-1-fip\n") || !strings.Contains(r.out, "applied FloatingIP/web-2-fip\n") {
		t.Errorf("apply output: %q", r.out)
	}

	// FIXED-IP is the address in force: the endpoint's first IPv4 when
	// spec.fixedIP is not given.
	wantTable := "NAME       IP             ENDPOINT  FIXED-IP\n" +
		"web-1-fip  198.51.100.10  web-1     10.65.0.2\n" +
		"web-2-fip  198.51.100.11  web-2     10.65.0.4\n"
	for _, kind := range []string{"floatingips", "FloatingIPs", "FLOATINGIP", "floatingip"} {
		r = run(t, ds, "", "get", kind)
		if r.code != 0 || r.out != wantTable {
			t.Errorf("get %s: %d %q\n%s\nwant\n%s", kind, r.code, r.err, r.out, wantTable)
		}
	}
	r = run(t, ds, "", "get", "floatingip", "web-2-fip")
	if r.code != 0 || r.out != "NAME       IP             ENDPOINT  FIXED-IP\nweb-2-fip  198.51.100.11  web-2     10.65.0.4\n" {
		t.Errorf("get floatingip web-2-fip: %d %q %q", r.code, r.out, r.err)
	}
	if r = run(t, ds, "", "get", "floatingip", "nope"); r.code != 1 || !strings.Contains(r.err, "FloatingIP/nope: not found") {
		t.Errorf("get of a missing floating IP: %d %q", r.code, r.err)
	}

	r = run(t, ds, "", "get", "FloatingIP", "web-1-fip", "-o", "json")
	if r.code != 0 {
		t.Fatal(r.err)
	}
	var objs []map[string]any
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil || len(objs) != 1 {
		t.Fatalf("get -o json: %v\n%s", err, r.out)
	}
	spec := objs[0]["spec"].(map[string]any)
	if objs[0]["kind"] != "FloatingIP" || spec["ip"] != "198.51.100.10" || spec["endpoint"] != "web-1" {
		t.Errorf("get -o json = %v", objs)
	}
	if _, ok := spec["fixedIP"]; ok {
		t.Errorf("a fixedIP that was not given is printed: %v", spec)
	}
	r = run(t, ds, "", "get", "floatingips", "-o", "json")
	if err := json.Unmarshal([]byte(r.out), &objs); err != nil || len(objs) != 2 || objs[1]["spec"].(map[string]any)["fixedIP"] != "10.65.0.4" {
		t.Errorf("get floatingips -o json: %v\n%s", err, r.out)
	}

	// YAML output applies back and changes nothing.
	r = run(t, ds, "", "get", "floatingips", "-o", "yaml")
	if r.code != 0 {
		t.Fatal(r.err)
	}
	before := snapshotDir(t, ds)
	if back := run(t, ds, r.out, "apply", "-f", "-"); back.code != 0 {
		t.Fatalf("re-applying get -o yaml failed: %s\n%s", back.err, r.out)
	}
	if after := snapshotDir(t, ds); len(after) != len(before) {
		t.Fatal("re-applying changed the datastore")
	} else {
		for p, c := range before {
			if after[p] != c {
				t.Fatalf("re-applying changed %s", p)
			}
		}
	}

	// The endpoint cannot go while a floating IP refers to it.
	r = run(t, ds, "", "delete", "workloadendpoint", "web-1")
	if r.code != 1 || !strings.Contains(r.err, "FloatingIP/web-1-fip: spec.endpoint: WorkloadEndpoint/web-1 does not exist") {
		t.Fatalf("deleting a referenced endpoint: %d %q", r.code, r.err)
	}
	assertSameDir(t, before, snapshotDir(t, ds))

	fipDoc := "apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: web-1-fip}\nspec: {ip: 198.51.100.10, endpoint: web-1}\n"
	path := filepath.Join(t.TempDir(), "fip.yaml")
	if err := os.WriteFile(path, []byte(fipDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	if r = run(t, ds, "", "delete", "-f", path); r.code != 0 || r.out != "deleted FloatingIP/web-1-fip\n" {
		t.Fatalf("delete -f: %d %q %q", r.code, r.out, r.err)
	}
	if r = run(t, ds, "", "delete", "workloadendpoint", "web-1"); r.code != 0 {
		t.Fatalf("deleting the endpoint after its floating IP: %s", r.err)
	}
	if r = run(t, ds, "", "delete", "FloatingIPs", "web-2-fip"); r.code != 0 || r.out != "deleted FloatingIP/web-2-fip\n" {
		t.Fatalf("delete floatingips NAME: %d %q %q", r.code, r.out, r.err)
	}
	if r = run(t, ds, "", "delete", "floatingip", "web-2-fip"); r.code != 1 || !strings.Contains(r.err, "FloatingIP/web-2-fip: not found") {
		t.Fatalf("deleting it again: %d %q", r.code, r.err)
	}
	if r = run(t, ds, "", "get", "floatingips"); r.code != 0 || r.out != "NAME  IP  ENDPOINT  FIXED-IP\n" {
		t.Errorf("get floatingips after delete: %d %q", r.code, r.out)
	}
}

func assertSameDir(t *testing.T, before, after map[string]string) {
	t.Helper()
	if len(after) != len(before) {
		t.Fatalf("datastore changed: %d files before, %d after", len(before), len(after))
	}
	for p, c := range before {
		if after[p] != c {
			t.Fatalf("datastore file %s changed", p)
		}
	}
}

func TestFloatingIPApplyRejectsBadInput(t *testing.T) {
	cases := []struct {
		name, spec, want string
	}{
		{"not in an external pool", "{ip: 203.0.113.5, endpoint: web-2}",
			"FloatingIP/new: spec.ip: 203.0.113.5 is in no enabled, external IPPool (the external pools are IPPool/ext (198.51.100.0/24))"},
		{"in a workload pool", "{ip: 10.65.9.9, endpoint: web-2}",
			"FloatingIP/new: spec.ip: 10.65.9.9 is inside IPPool/wl (10.65.0.0/16), which is not external"},
		{"a workload's address", "{ip: 10.65.0.3, endpoint: web-2}",
			"FloatingIP/new: spec.ip: 10.65.0.3 is an address of WorkloadEndpoint/web-2"},
		{"taken", "{ip: 198.51.100.10, endpoint: web-2, fixedIP: 10.65.0.3}",
			"FloatingIP/new: spec.ip: 198.51.100.10 is already used by FloatingIP/web-1-fip"},
		{"IPv6", "{ip: '2001:db8::1', endpoint: web-2}",
			"(FloatingIP/new): spec.ip: 2001:db8::1 is an IPv6 address; IPv6 floating IPs are not supported yet"},
		{"with prefix length", "{ip: 198.51.100.20/32, endpoint: web-2}",
			`(FloatingIP/new): spec.ip: "198.51.100.20/32" is not a valid IP address`},
		{"no endpoint", "{ip: 198.51.100.20}", "(FloatingIP/new): spec.endpoint: required"},
		{"unknown endpoint", "{ip: 198.51.100.20, endpoint: web-9}",
			"FloatingIP/new: spec.endpoint: WorkloadEndpoint/web-9 does not exist"},
		{"fixed IP not the endpoint's", "{ip: 198.51.100.20, endpoint: web-2, fixedIP: 10.65.0.2}",
			"FloatingIP/new: spec.fixedIP: 10.65.0.2 is not an address of WorkloadEndpoint/web-2 (10.65.0.3/32, 10.65.0.4/32)"},
		{"fixed IP has one already", "{ip: 198.51.100.20, endpoint: web-2, fixedIP: 10.65.0.4}",
			"FloatingIP/new: spec.fixedIP: 10.65.0.4 of WorkloadEndpoint/web-2 already has FloatingIP/web-2-fip"},
		{"unknown field", "{ip: 198.51.100.20, endpoint: web-2, port: 80}", "(FloatingIP/new): spec.port: unknown field"},
	}
	ds := t.TempDir()
	if r := run(t, ds, fipModel, "apply", "-f", "-"); r.code != 0 {
		t.Fatal(r.err)
	}
	before := snapshotDir(t, ds)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A valid document first: the whole apply must still be refused.
			doc := "apiVersion: calyx.io/v1\nkind: IPPool\nmetadata: {name: ok}\nspec: {cidr: 10.70.0.0/16}\n---\n" +
				"apiVersion: calyx.io/v1\nkind: FloatingIP\nmetadata: {name: new}\nspec: " + tc.spec + "\n"
			r := run(t, ds, doc, "apply", "-f", "-")
			if r.code != 1 {
				t.Fatalf("exit = %d, want 1; stderr %q", r.code, r.err)
			}
			if !strings.Contains(r.err, tc.want) {
				t.Errorf("stderr %q does not contain %q", r.err, tc.want)
			}
			assertSameDir(t, before, snapshotDir(t, ds))
		})
	}
}
