package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/calyxnet/calyx/bpfmap"
	"github.com/calyxnet/calyx/loader"
)

// loadedDataplane loads the programs with their maps pinned in a bpffs of
// the test's own, for what needs real maps, and returns the pin directory.
// It needs root: what skips without it under CI fails, naming what.
func loadedDataplane(t *testing.T, what string) (string, *loader.Dataplane) {
	t.Helper()
	switch {
	case os.Geteuid() == 0:
	case os.Getenv("CI") != "":
		t.Fatalf("CI: %s needs root (BPF, bpffs)", what)
	default:
		t.Skip("not root (under CI=true this fails)")
	}
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "calyx")
	dp, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	return dir, dp
}

// ct dump lists the flows of both conntrack maps, each once, with the map
// it is in; --endpoint (an address), --proto and --port keep those that
// carry it in either direction; a table ends with the count per state.
func TestCTDumpFilters(t *testing.T) {
	dir, dp := loadedDataplane(t, "ct dump's test")
	ap := netip.MustParseAddrPort
	client, fip, fixed := ap("203.0.113.7:40001"), ap("192.0.2.20:443"), ap("10.65.0.20:443")
	wl1, wl2 := ap("10.65.0.10:5000"), ap("10.65.0.11:53")
	tcp, udp := uint8(bpfmap.ProtoTCP), uint8(bpfmap.ProtoUDP)
	for _, e := range []struct {
		k bpfmap.CTKey
		v bpfmap.CTEntry
	}{
		{bpfmap.CTKey{Src: client, Dst: fip, Proto: tcp}, bpfmap.CTEntry{NATSrc: client, NATDst: fixed, NAT: bpfmap.NATDNAT, TCPFlags: bpfmap.TCPSyn, WScale: -1}},
		{bpfmap.CTKey{Src: fixed, Dst: client, Proto: tcp}, bpfmap.CTEntry{NATSrc: fip, NATDst: client, Reply: true, NAT: bpfmap.NATDNAT, TCPFlags: bpfmap.TCPSyn | bpfmap.TCPAck, WScale: -1}},
	} {
		if _, err := dp.Maps.PutTranslated(e.k, e.v, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dp.Maps.PutTracked(bpfmap.CTKey{Src: wl1, Dst: wl2, Proto: udp}, bpfmap.CTEntry{Packets: 3, Bytes: 300, WScale: -1},
		&bpfmap.CTEntry{Packets: 2, Bytes: 200, WScale: -1}, false); err != nil {
		t.Fatal(err)
	}
	dump := func(args ...string) []ctRow {
		t.Helper()
		var out, errb bytes.Buffer
		all := append([]string{"--bpffs", dir, "-o", "json", "ct", "dump"}, args...)
		if code := Run(context.Background(), all, IO{Out: &out, Err: &errb}); code != 0 {
			t.Fatalf("%v: exit %d, %s", args, code, errb.String())
		}
		var rows []ctRow
		if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
			t.Fatalf("%v: %v in %s", args, err, out.String())
		}
		return rows
	}
	rows := dump()
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2 flows: %+v", len(rows), rows)
	}
	for _, r := range rows {
		switch r.Proto {
		case "tcp":
			if r.Table != "nat" || r.NAT != "dnat" || r.State != "established" || r.Dst != fip.String() || r.ReplySrc != fixed.String() {
				t.Errorf("translated flow: %+v", r)
			}
		case "udp":
			if r.Table != "ct" || r.Src != wl1.String() || r.ReplySrc != wl2.String() || r.Packets != 3 || r.ReplyBytes != 200 {
				t.Errorf("tracked flow: %+v", r)
			}
		}
	}
	for _, c := range []struct {
		args []string
		want string // the protocol of the one flow that matches, or "" for none
	}{
		{[]string{"--proto", "udp"}, "udp"},
		{[]string{"--proto=tcp"}, "tcp"},
		{[]string{"--port", "443"}, "tcp"},
		{[]string{"--port", "5000"}, "udp"},
		{[]string{"--endpoint", "10.65.0.20"}, "tcp"}, // the fixed IP: the reply direction's
		{[]string{"--endpoint", "10.65.0.11", "--proto", "udp"}, "udp"},
		{[]string{"--endpoint", "10.65.0.11", "--proto", "tcp"}, ""},
		{[]string{"--port", "9"}, ""},
	} {
		rows := dump(c.args...)
		switch {
		case c.want == "" && len(rows) != 0, c.want != "" && (len(rows) != 1 || rows[0].Proto != c.want):
			t.Errorf("%v: %+v, want the %q flow only", c.args, rows, c.want)
		}
	}
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"--bpffs", dir, "ct", "dump"}, IO{Out: &out, Err: &errb}); code != 0 ||
		!strings.Contains(out.String(), "2 flows by state:") || !strings.Contains(out.String(), "established") {
		t.Errorf("table: exit %d\n%s%s", code, out.String(), errb.String())
	}
}
