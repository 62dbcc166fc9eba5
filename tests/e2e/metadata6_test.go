package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/lab"
)

// metadata6 is the metadata service's IPv6 address, as OpenStack serves it.
const metadata6 = "fe80::a9fe:a9fe"

// metadataConfig6 is the Config with the lab's metadata service and
// endpointToHostAction (empty: the default).
func metadataConfig6(e2h string) string {
	s := lab.MetadataConfigYAML("127.0.0.1:8775")
	if e2h != "" {
		s += "  endpointToHostAction: " + e2h + "\n"
	}
	return s
}

// TestMetadataIPv6: dual-stack instances on one host (veth and VM in the
// mixed lab) reach the metadata service at [fe80::a9fe:a9fe]:80 on their
// own link, through the agent's proxy, which tells the service who they
// are (X-Forwarded-For: the instance's IPv4 address) whatever they claim;
// the IPv4 path (169.254.169.254, DNAT) still works beside it, both hold
// under endpointToHostAction Drop, and an endpoint's listener goes with
// the endpoint.
func TestMetadataIPv6(t *testing.T) {
	l := newLab(t)
	h, err := l.AddHost("host-a", "10.30.0.11/24")
	if err != nil {
		t.Fatal(err)
	}
	var ws []*lab.Workload
	for i, name := range []string{"wa", "wb"} {
		w, err := l.AddWorkload(h.Name, name, fmt.Sprintf("10.65.0.%d", i+2), "")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.AddIPv6(w, fmt.Sprintf("fd00:65::%d", i+2)); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	wa, wb := ws[0], ws[1]
	if err := l.StartAgent(h.Name); err != nil {
		t.Fatal(err)
	}
	model := lab.JoinYAML(lab.PoolYAML("v4", "10.65.0.0/16"), lab.PoolYAML("v6", "fd00:65::/64"), lab.NodeYAML(h),
		metadataConfig6(""), lab.EndpointYAML(wa), lab.EndpointYAML(wb))
	if out, err := l.Apply("", model); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if err := l.WaitLinks(h.Name, attachTimeout, wa.HostIface, wb.HostIface); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartHTTP(h.NS, "metadata", "127.0.0.1:8775"); err != nil {
		t.Fatal(err)
	}

	// get6 fetches the metadata index over IPv6 from w, sending header.
	get6 := func(w *lab.Workload, header http.Header) (int, string, error) {
		addr := fmt.Sprintf("[%s%%%s]:80", metadata6, w.InstanceIface())
		return lab.HTTPGetWith(w.NS, addr, "/latest/meta-data/", header, echoTimeout)
	}
	// served says whether body is the host's metadata server answering
	// the index for exactly the instance at w's IPv4 address.
	served := func(body string, w *lab.Workload) bool {
		return strings.HasPrefix(body, "metadata ") &&
			strings.HasSuffix(body, fmt.Sprintf(" /latest/meta-data/ forwarded-for=%s\n", w.IP))
	}

	t.Run("ipv6", func(t *testing.T) {
		for _, w := range ws {
			// The listener opens with the interface's programs; the
			// instance's link-local address may still be tentative.
			err := lab.Eventually(trafficTimeout, 200*time.Millisecond, func() error {
				code, body, err := get6(w, nil)
				if err != nil {
					return err
				}
				if code != http.StatusOK || !served(body, w) {
					return fmt.Errorf("%d %q, want 200 from the metadata server for %s", code, body, w.IP)
				}
				return nil
			})
			if err != nil {
				t.Errorf("%s (%s): GET http://[%s]/latest/meta-data/: %v", w.Name, w.Kind, metadata6, err)
			}
		}
	})

	t.Run("hostile-forwarded-for", func(t *testing.T) {
		// wa claims to be wb every way a proxy chain might say so.
		claim := http.Header{
			"X-Forwarded-For":         {wb.IP.String()},
			"X_Forwarded_For":         {wb.IP.String()},
			"Forwarded":               {"for=" + wb.IP.String()},
			"X-Real-IP":               {wb.IP.String()},
			"X-Instance-ID":           {wb.Name},
			"X-Instance-ID-Signature": {"forged"},
		}
		code, body, err := get6(wa, claim)
		if err != nil || code != http.StatusOK || !served(body, wa) {
			t.Errorf("wa claiming wb's address: %d %q %v; want 200 with X-Forwarded-For %s only", code, body, err, wa.IP)
		}
	})

	t.Run("ipv4", func(t *testing.T) {
		for _, w := range ws {
			code, body, err := lab.HTTPGet(w.NS, "169.254.169.254:80", "/latest/meta-data/", echoTimeout)
			want := fmt.Sprintf("metadata %s:", w.IP)
			if err != nil || code != http.StatusOK || !strings.HasPrefix(body, want) || strings.Contains(body, "forwarded-for") {
				t.Errorf("%s: GET http://169.254.169.254/latest/meta-data/: %d %q %v; want 200 from %s unproxied (%q...)", w.Name, code, body, err, w.IP, want)
			}
		}
	})

	t.Run("endpointToHostAction-drop", func(t *testing.T) {
		// The metadata service is the host's, allowed as DHCP and DNS are.
		if out, err := l.Apply("", metadataConfig6("Drop")); err != nil {
			t.Fatalf("apply endpointToHostAction Drop: %v\n%s", err, out)
		}
		defer func() {
			if out, err := l.Apply("", metadataConfig6("")); err != nil {
				t.Errorf("apply endpointToHostAction Accept again: %v\n%s", err, out)
			}
		}()
		if err := l.WaitNoPing(wa.NS, h.Underlay.Addr().String(), trafficTimeout); err != nil {
			t.Fatalf("wa still reaches host-a with endpointToHostAction Drop: %v", err)
		}
		code, body, err := get6(wa, nil)
		if err != nil || code != http.StatusOK || !served(body, wa) {
			t.Errorf("wa over IPv6 under endpointToHostAction Drop: %d %q %v; want 200 for %s", code, body, err, wa.IP)
		}
		code, body, err = lab.HTTPGet(wa.NS, "169.254.169.254:80", "/latest/meta-data/", echoTimeout)
		if err != nil || code != http.StatusOK || !strings.HasPrefix(body, fmt.Sprintf("metadata %s:", wa.IP)) {
			t.Errorf("wa over IPv4 under endpointToHostAction Drop: %d %q %v; want 200", code, body, err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		text, err := l.AgentMetrics(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if n, ok, _ := lab.MetricSum(text, "calyx_metadata_listeners"); !ok || n != 2 {
			t.Errorf("calyx_metadata_listeners = %v (present %v), want 2", n, ok)
		}
		if n, ok, _ := lab.MetricSum(text, `calyx_metadata_requests_total{result="forwarded"}`); !ok || n < 3 {
			t.Errorf(`calyx_metadata_requests_total{result="forwarded"} = %v (present %v), want at least 3`, n, ok)
		}
	})

	t.Run("endpoint-deleted", func(t *testing.T) {
		if got := metadataListeners(t, l, h.NS); !got[wa.HostIface] || !got[wb.HostIface] {
			t.Fatalf("listeners on [%s]:80 %v, want on %s and %s", metadata6, got, wa.HostIface, wb.HostIface)
		}
		if out, errOut, err := l.Calyxctl(h.Name, "delete", "workloadendpoint", wb.Name); err != nil {
			t.Fatalf("calyxctl delete: %v\n%s%s", err, out, errOut)
		}
		err := lab.Eventually(removeTimeout, 200*time.Millisecond, func() error {
			if got := metadataListeners(t, l, h.NS); got[wb.HostIface] {
				return fmt.Errorf("still listening on %s", wb.HostIface)
			}
			return nil
		})
		if err != nil {
			t.Errorf("listener of the deleted endpoint: %v", err)
		}
		if code, body, err := get6(wb, nil); err == nil {
			t.Errorf("deleted wb still gets an answer over IPv6: %d %q", code, body)
		}
		code, body, err := get6(wa, nil)
		if err != nil || code != http.StatusOK || !served(body, wa) {
			t.Errorf("wa after wb was deleted: %d %q %v; want 200 for %s", code, body, err, wa.IP)
		}
	})
}

// metadataListeners returns the interfaces of namespace ns with a listener
// on [fe80::a9fe:a9fe]:80 (ss shows one as "[fe80::a9fe:a9fe]%IFNAME:80").
func metadataListeners(t *testing.T, l *lab.Lab, ns string) map[string]bool {
	t.Helper()
	res, err := l.Exec(ns, "ss", "-Hltn", "sport = :80")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	prefix := "[" + metadata6 + "]%"
	for line := range strings.Lines(res.Stdout) {
		for _, f := range strings.Fields(line) {
			if ifname, ok := strings.CutPrefix(f, prefix); ok {
				out[strings.TrimSuffix(ifname, ":80")] = true
			}
		}
	}
	return out
}
