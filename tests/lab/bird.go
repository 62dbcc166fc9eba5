package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BIRD 2 (Debian package bird2) is the data center's BGP router in the lab:
// the real peer calyx's BGP speaker talks to.
const (
	// BIRDPackage is the Debian package of bird and birdc.
	BIRDPackage = "bird2"
	// DefaultFabricAS is the data center's AS: the gateway's and the
	// router's (BIRDOptions.AS, FabricBGPOptions.AS).
	DefaultFabricAS = 65000
	// DefaultNodeAS is the calyx hosts' AS when nothing overrides it
	// (BGPConfiguration's default asNumber).
	DefaultNodeAS = 64512
	// DefaultGracefulRestartTime is BIRD's and calyx's default restart
	// time in seconds.
	DefaultGracefulRestartTime = 120
	// birdAnnounce and birdResolve are the static protocols of a BIRD
	// config: what it announces to its neighbors, and what it only uses to
	// resolve next hops of multihop neighbors (never exported).
	birdAnnounce = "announce"
	birdResolve  = "underlay"
	// BIRDImportFilter is the name of the filter every BGP protocol imports
	// through: it accepts everything, and exists so that "birdc show
	// protocols all" names it and a test can inspect it.
	BIRDImportFilter = "calyx_import"
)

// RequireBIRD stops the test (CI: fail, elsewhere: skip) unless bird and
// birdc (Debian package bird2) are installed.
func RequireBIRD(t testing.TB) {
	t.Helper()
	RequireTools(t, "bird", "birdc")
}

// BIRDNeighbor is one BGP session of a BIRD instance.
type BIRDNeighbor struct {
	// Name is the BGP protocol's name in bird.conf and birdc (letters,
	// digits and _; a BIRD keyword such as "gw" is refused by bird). Default:
	// BIRDProtocolName of the address.
	Name string
	// Address is the neighbor's address.
	Address netip.Addr
	// AS is the neighbor's AS (default DefaultNodeAS).
	AS uint32
	// Password, when set, turns on TCP MD5 for the session.
	Password string
	// Passive makes BIRD wait for the neighbor to connect.
	Passive bool
	// Multihop, when positive, is the TTL of a session with a neighbor
	// that is not directly connected (BIRD's "multihop N"); its next hops
	// are then resolved recursively (see BIRDOptions.Resolve).
	Multihop int
	// Local is the session's source address (default: the instance's
	// RouterID when of the same family).
	Local netip.Addr
}

// BIRDStatic is a static route in a BIRD config.
type BIRDStatic struct {
	Prefix netip.Prefix
	// Via is the next hop; invalid means a blackhole route.
	Via netip.Addr
}

// BIRDOptions configures StartBIRD.
type BIRDOptions struct {
	// Name names the instance (its directory <lab dir>/bird/<Name>); default
	// the namespace without the lab prefix. Unique per lab.
	Name string
	// NS is the namespace BIRD runs in.
	NS string
	// RouterID is BIRD's router id and default source address.
	RouterID netip.Addr
	// AS is BIRD's own AS (default DefaultFabricAS).
	AS uint32
	// Neighbors are the BGP sessions, one protocol each.
	Neighbors []BIRDNeighbor
	// Announce lists the prefixes BIRD originates (blackhole static routes
	// of protocol "announce") and exports to every neighbor with itself as
	// next hop. Nothing else is exported: learned routes are not passed on.
	Announce []netip.Prefix
	// Resolve lists routes BIRD uses only to resolve next hops of multihop
	// neighbors (protocol "underlay"): never exported, never installed.
	Resolve []BIRDStatic
	// NoKernel keeps learned routes out of the namespace's kernel table
	// (a stand-in peer on a host). Otherwise every route learned over BGP
	// is installed (proto bird) and only those.
	NoKernel bool
	// IPv6 adds an IPv6 channel (import all, export the IPv6 announcements)
	// to every IPv4 session (MP-BGP). An IPv6 neighbor's session has the
	// IPv6 channel only, with or without it.
	IPv6 bool
	// Address6 is the instance's IPv6 address: the default source of its
	// IPv6 sessions and the next hop of the IPv6 announcements it sends
	// over IPv4 sessions (which have no IPv6 source address to take it
	// from).
	Address6 netip.Addr
	// NoGracefulRestart turns graceful restart off (it is on by default).
	NoGracefulRestart bool
	// GracefulRestartTime is the restart time in seconds (default
	// DefaultGracefulRestartTime).
	GracefulRestartTime int
	// Debug logs BGP states, routes and events of every protocol.
	Debug bool
}

// BIRD is a running bird in a lab namespace. Stop (or the lab's Close)
// ends it and removes its directory.
type BIRD struct {
	// Name is the instance's name; NS its namespace.
	Name, NS string
	// Dir holds ConfPath (bird.conf), SocketPath (the control socket),
	// PIDPath and LogPath (bird's output).
	Dir, ConfPath, SocketPath, PIDPath, LogPath string

	lab  *Lab
	mu   sync.Mutex
	opts BIRDOptions
	proc *Proc
	out  *os.File
}

var (
	birdNameRE     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
	birdInstanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	birdTimeRE     = regexp.MustCompile(`^\d\d:\d\d:\d\d`)
)

// BIRDProtocolName turns a host or peer name into a BIRD protocol name:
// every character other than a letter or digit becomes "_" ("host-a" gives
// "host_a"); a name not starting with a letter gets "p_" in front.
func BIRDProtocolName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	out := string(b)
	if out == "" || !(out[0] >= 'a' && out[0] <= 'z' || out[0] >= 'A' && out[0] <= 'Z') {
		out = "p_" + out
	}
	return out
}

// normalize fills the defaults and checks o.
func (o BIRDOptions) normalize() (BIRDOptions, error) {
	if o.NS == "" {
		return o, errors.New("bird: no namespace")
	}
	if !o.RouterID.Is4() {
		return o, fmt.Errorf("bird %s: router id %v is not an IPv4 address", o.NS, o.RouterID)
	}
	if o.AS == 0 {
		o.AS = DefaultFabricAS
	}
	if o.GracefulRestartTime == 0 {
		o.GracefulRestartTime = DefaultGracefulRestartTime
	}
	ns := slices.Clone(o.Neighbors)
	seen := map[string]bool{}
	for i := range ns {
		n := &ns[i]
		if !n.Address.IsValid() {
			return o, fmt.Errorf("bird %s: neighbor %d has no address", o.NS, i)
		}
		if n.Name == "" {
			n.Name = BIRDProtocolName(n.Address.String())
		}
		if !birdNameRE.MatchString(n.Name) || n.Name == birdAnnounce || n.Name == birdResolve {
			return o, fmt.Errorf("bird %s: invalid protocol name %q", o.NS, n.Name)
		}
		if seen[n.Name] {
			return o, fmt.Errorf("bird %s: protocol name %q used twice", o.NS, n.Name)
		}
		seen[n.Name] = true
		if n.AS == 0 {
			n.AS = DefaultNodeAS
		}
		if strings.ContainsAny(n.Password, "\"\\\n") {
			return o, fmt.Errorf("bird %s: neighbor %s: password with a quote, backslash or newline", o.NS, n.Name)
		}
		if !n.Local.IsValid() && n.Address.Is4() {
			n.Local = o.RouterID
		}
		if !n.Local.IsValid() && n.Address.Is6() && o.Address6.IsValid() {
			n.Local = o.Address6
		}
	}
	o.Neighbors = ns
	return o, nil
}

// Config renders bird.conf for o (defaults filled in); bird logs to
// stderr, which StartBIRD sends to LogPath.
func (o BIRDOptions) Config() (string, error) {
	o, err := o.normalize()
	if err != nil {
		return "", err
	}
	// IPv6 tables: with IPv6 channels on the IPv4 sessions or an IPv6
	// neighbor.
	v6 := o.IPv6 || slices.ContainsFunc(o.Neighbors, func(n BIRDNeighbor) bool { return n.Address.Is6() })
	var b strings.Builder
	fmt.Fprintf(&b, "# calyx lab: BIRD %s in namespace %s\n", o.Name, o.NS)
	fmt.Fprintf(&b, "router id %s;\n", o.RouterID)
	b.WriteString("log stderr all;\n")
	if o.Debug {
		b.WriteString("debug protocols { states, routes, events };\n")
	}
	b.WriteString("\nprotocol device {\n\tscan time 10;\n}\n")
	b.WriteString("\n# Only routes learned over BGP go to the kernel; announcements and\n# the underlay's resolving routes stay in BIRD.\n")
	if o.NoKernel {
		b.WriteString("# (kernel export off: a stand-in peer)\n")
	} else {
		b.WriteString("protocol kernel {\n\tipv4 {\n\t\timport none;\n\t\texport filter { if source = RTS_BGP then accept; reject; };\n\t};\n\tmerge paths on;\n}\n")
		if v6 {
			b.WriteString("protocol kernel {\n\tipv6 {\n\t\timport none;\n\t\texport filter { if source = RTS_BGP then accept; reject; };\n\t};\n\tmerge paths on;\n}\n")
		}
	}
	var a4, a6 []netip.Prefix
	for _, p := range o.Announce {
		if p.Addr().Is4() {
			a4 = append(a4, p.Masked())
		} else {
			a6 = append(a6, p.Masked())
		}
	}
	b.WriteString("\n# What this router announces to every neighbor (next hop: itself).\n")
	fmt.Fprintf(&b, "protocol static %s {\n\tipv4;\n", birdAnnounce)
	for _, p := range a4 {
		fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
	}
	b.WriteString("}\n")
	if v6 {
		fmt.Fprintf(&b, "protocol static %s6 {\n\tipv6;\n", birdAnnounce)
		for _, p := range a6 {
			fmt.Fprintf(&b, "\troute %s blackhole;\n", p)
		}
		b.WriteString("}\n")
	}
	if len(o.Resolve) > 0 {
		b.WriteString("\n# Routes to the other underlay segments, only to resolve the next hops\n# of multihop neighbors: never exported.\n")
		fmt.Fprintf(&b, "protocol static %s {\n\tipv4;\n", birdResolve)
		for _, r := range o.Resolve {
			if r.Via.IsValid() {
				fmt.Fprintf(&b, "\troute %s via %s;\n", r.Prefix.Masked(), r.Via)
			} else {
				fmt.Fprintf(&b, "\troute %s blackhole;\n", r.Prefix.Masked())
			}
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "\n# Imports everything; a named filter so that it can be inspected.\nfilter %s {\n\taccept;\n}\n", BIRDImportFilter)
	for _, n := range o.Neighbors {
		fmt.Fprintf(&b, "\nprotocol bgp %s {\n", n.Name)
		if n.Local.IsValid() {
			fmt.Fprintf(&b, "\tlocal %s as %d;\n", n.Local, o.AS)
		} else {
			fmt.Fprintf(&b, "\tlocal as %d;\n", o.AS)
		}
		fmt.Fprintf(&b, "\tneighbor %s as %d;\n", n.Address, n.AS)
		if n.Multihop > 0 {
			fmt.Fprintf(&b, "\tmultihop %d;\n", n.Multihop)
		}
		if n.Passive {
			b.WriteString("\tpassive on;\n")
		}
		if n.Password != "" {
			fmt.Fprintf(&b, "\tpassword \"%s\";\n", n.Password)
		}
		if o.NoGracefulRestart {
			b.WriteString("\tgraceful restart off;\n")
		} else {
			fmt.Fprintf(&b, "\tgraceful restart on;\n\tgraceful restart time %d;\n", o.GracefulRestartTime)
		}
		b.WriteString("\tconnect retry time 2;\n\terror wait time 1, 10;\n")
		if n.Address.Is4() {
			fmt.Fprintf(&b, "\tipv4 {\n\t\timport filter %s;\n\t\texport where proto = \"%s\";\n\t};\n", BIRDImportFilter, birdAnnounce)
		}
		if o.IPv6 || n.Address.Is6() {
			fmt.Fprintf(&b, "\tipv6 {\n\t\timport filter %s;\n\t\texport where proto = \"%s6\";\n", BIRDImportFilter, birdAnnounce)
			if n.Address.Is4() && o.Address6.IsValid() {
				fmt.Fprintf(&b, "\t\tnext hop address %s;\n", o.Address6)
			}
			b.WriteString("\t};\n")
		}
		b.WriteString("}\n")
	}
	return b.String(), nil
}

// StartBIRD writes bird.conf for o into the lab directory, checks it with
// "bird -p", starts bird in the foreground in o.NS and waits until its
// control socket answers. The lab's Close stops it (and Reap kills it after
// a crash); Stop does so earlier. Both remove its directory.
func (l *Lab) StartBIRD(o BIRDOptions) (*BIRD, error) {
	if o.Name == "" {
		o.Name = strings.TrimPrefix(o.NS, l.Prefix+"-")
	}
	if !birdInstanceRE.MatchString(o.Name) {
		return nil, fmt.Errorf("bird: invalid name %q", o.Name)
	}
	o, err := o.normalize()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(l.Dir, "bird", o.Name)
	b := &BIRD{
		Name: o.Name, NS: o.NS, Dir: dir,
		ConfPath:   filepath.Join(dir, "bird.conf"),
		SocketPath: filepath.Join(dir, "bird.ctl"),
		PIDPath:    filepath.Join(dir, "bird.pid"),
		LogPath:    filepath.Join(dir, "bird.log"),
		lab:        l,
		opts:       o,
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("bird %s: %w", o.Name, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bird %s: %w (one instance per name)", o.Name, err)
	}
	if err := b.writeConfig(o); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := b.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

// writeConfig renders o into ConfPath and has bird parse it.
func (b *BIRD) writeConfig(o BIRDOptions) error {
	conf, err := o.Config()
	if err != nil {
		return err
	}
	tmp := b.ConfPath + ".new"
	if err := os.WriteFile(tmp, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("bird %s: %w", b.Name, err)
	}
	if res, err := b.lab.Exec("", "bird", "-p", "-c", tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("bird %s: config rejected: %s\n%s", b.Name, strings.TrimSpace(res.Combined()), conf)
	}
	if err := os.Rename(tmp, b.ConfPath); err != nil {
		return fmt.Errorf("bird %s: %w", b.Name, err)
	}
	return nil
}

func (b *BIRD) start() error {
	l := b.lab
	out, err := os.OpenFile(b.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("bird %s: %w", b.Name, err)
	}
	// Detached like etcd and the agents, so it outlives the lab process
	// for "calyx-lab up"; Close stops it through the closer below.
	p, err := l.startProcDetached(b.NS, []string{"bird", "-f", "-c", b.ConfPath, "-s", b.SocketPath, "-P", b.PIDPath}, out)
	if err != nil {
		out.Close()
		return fmt.Errorf("bird %s: %w", b.Name, err)
	}
	b.mu.Lock()
	b.proc, b.out = p, out
	b.mu.Unlock()
	l.trackCloser(b)
	err = Eventually(10*time.Second, 100*time.Millisecond, func() error {
		select {
		case <-p.Done():
			return errors.New("bird exited")
		default:
		}
		_, err := b.Birdc("show", "status")
		return err
	})
	if err != nil {
		_ = b.Stop()
		return fmt.Errorf("bird %s: not ready: %w\n--- %s ---\n%s", b.Name, err, b.LogPath, l.logTail(b.LogPath, 30))
	}
	l.logf("bird %s: running in %s (pid %d, socket %s)", b.Name, b.NS, p.Pid(), b.SocketPath)
	return nil
}

// Options returns the options the running config was made from, defaults
// filled in.
func (b *BIRD) Options() BIRDOptions {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.opts
	o.Neighbors = slices.Clone(o.Neighbors)
	return o
}

// Pid returns bird's pid, or 0 once stopped.
func (b *BIRD) Pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil {
		return 0
	}
	return b.proc.Pid()
}

// Birdc runs "birdc -s SOCKET ARGS..." and returns its output without the
// "BIRD x.y ready." banner. birdc exits 0 on most command errors, so a
// reply that is a BIRD error ("syntax error", "Unknown protocol", ...) is
// an error too.
func (b *BIRD) Birdc(args ...string) (string, error) {
	res, err := b.lab.Run(Command{Args: append([]string{"birdc", "-s", b.SocketPath}, args...), Timeout: 10 * time.Second})
	out := stripBIRDBanner(res.Stdout)
	if err != nil {
		return out, fmt.Errorf("bird %s: %w", b.Name, err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	for _, bad := range []string{"syntax error", "Unknown protocol", "Unable to connect", "Access denied", "There is no", "Nothing to"} {
		if strings.Contains(first, bad) {
			return out, fmt.Errorf("bird %s: birdc %s: %s", b.Name, strings.Join(args, " "), first)
		}
	}
	return out, nil
}

func stripBIRDBanner(s string) string {
	if strings.HasPrefix(s, "BIRD ") {
		if i := strings.IndexByte(s, '\n'); i >= 0 && strings.HasSuffix(strings.TrimSpace(s[:i]), "ready.") {
			return s[i+1:]
		}
	}
	return s
}

// Reconfigure renders o (Name and NS stay the instance's), checks it and
// has bird load it ("birdc configure"): sessions whose settings changed
// restart, the others stay up.
func (b *BIRD) Reconfigure(o BIRDOptions) error {
	o.Name, o.NS = b.Name, b.NS
	o, err := o.normalize()
	if err != nil {
		return err
	}
	if err := b.writeConfig(o); err != nil {
		return err
	}
	out, err := b.Birdc("configure")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("bird %s: configure: %s", b.Name, strings.TrimSpace(out))
	}
	b.mu.Lock()
	b.opts = o
	b.mu.Unlock()
	b.lab.logf("bird %s: reconfigured: %s", b.Name, strings.TrimSpace(out))
	return nil
}

// Stop ends bird (SIGTERM: it withdraws its kernel routes and removes its
// socket and pid file; SIGKILL after 5 s) and removes its directory. It is
// idempotent.
func (b *BIRD) Stop() error { return b.stop(syscall.SIGTERM) }

// Kill SIGKILLs bird (its kernel routes and files stay, as after a crash)
// and removes its directory.
func (b *BIRD) Kill() error { return b.stop(syscall.SIGKILL) }

// Close is Stop, for the lab's closers.
func (b *BIRD) Close() error { return b.Stop() }

func (b *BIRD) stop(sig syscall.Signal) error {
	b.mu.Lock()
	p, out := b.proc, b.out
	b.proc, b.out = nil, nil
	b.mu.Unlock()
	b.lab.forgetCloser(b)
	var errs []error
	if p != nil {
		_ = p.Signal(sig)
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			_ = p.Signal(syscall.SIGKILL)
			<-p.Done()
			errs = append(errs, fmt.Errorf("bird %s: no exit within 5s of %s; killed", b.Name, sig))
		}
		_, _ = p.result()
		out.Close()
		b.lab.logf("bird %s: stopped (%s)", b.Name, sig)
	}
	if err := os.RemoveAll(b.Dir); err != nil {
		errs = append(errs, fmt.Errorf("bird %s: %w", b.Name, err))
	}
	return errors.Join(errs...)
}

// Log returns what bird logged so far ("" once stopped).
func (b *BIRD) Log() string {
	data, _ := os.ReadFile(b.LogPath)
	return string(data)
}

// BIRDRoute is one route of "birdc show route all".
type BIRDRoute struct {
	// Table is the BIRD table ("master4").
	Table  string
	Prefix netip.Prefix
	// Type is the route's kind: "unicast", "blackhole", "unreachable", ...
	Type string
	// Protocol is the protocol that brought the route (a BGP protocol's
	// name, "announce", ...).
	Protocol string
	// Since is when the route last changed, as BIRD prints it.
	Since string
	// From is the BGP neighbor the route came from when it is not its next
	// hop ("from ADDR").
	From netip.Addr
	// Primary says the route is the one BIRD selected ("*").
	Primary bool
	// Preference is BIRD's preference (BGP 100, static 200).
	Preference int
	// NextHops are the gateways ("via ADDR on IFACE"), Ifaces the
	// interfaces (also of "dev IFACE" routes).
	NextHops []netip.Addr
	Ifaces   []string
	// Source is the route's source ("BGP", "static", ...: the first word
	// of "Type:").
	Source string
	// ASPath is BGP.as_path; Origin BGP.origin; BGPNextHop BGP.next_hop.
	ASPath     []uint32
	Origin     string
	BGPNextHop netip.Addr
	// Attrs holds every "NAME: VALUE" attribute line (BGP.local_pref, ...).
	Attrs map[string]string
	// Stale says the route is kept by graceful restart: it came from a BGP
	// protocol whose neighbor is restarting and has not sent its End-of-RIB
	// yet. BIRD 2.0 does not print route flags; Routes fills this from
	// the protocols' state, ParseBIRDRoutes leaves it false.
	Stale bool
}

// NextHop returns the first next hop, or the zero Addr.
func (r BIRDRoute) NextHop() netip.Addr {
	if len(r.NextHops) == 0 {
		return netip.Addr{}
	}
	return r.NextHops[0]
}

var (
	// "10.65.1.0/26   unicast [host_a 2026-12-06 23:56:51.835 from 10.30.1.13] * (100) [AS64512i]"
	// (the prefix is blank for a further route of the same network).
	birdRouteRE = regexp.MustCompile(`^(\S+)?\s+([a-z]+) \[(\S+) ([^\]]*?)(?: from (\S+))?\](?: (\*|!))? \((\d+)(?:/\S+)?\)(.*)$`)
	birdViaRE   = regexp.MustCompile(`^via (\S+) on (\S+)`)
	birdDevRE   = regexp.MustCompile(`^dev (\S+)`)
	// "BGP.as_path: 64512" and friends.
	birdAttrRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9_.]*): ?(.*)$`)
)

// ParseBIRDRoutes parses "birdc show route [all]" (the banner may be
// there or not).
func ParseBIRDRoutes(out string) ([]BIRDRoute, error) {
	var routes []BIRDRoute
	table := ""
	var last netip.Prefix
	var cur *BIRDRoute
	flush := func() {
		if cur != nil {
			routes = append(routes, *cur)
			cur = nil
		}
	}
	for i, line := range strings.Split(stripBIRDBanner(out), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(line, "Table ") && strings.HasSuffix(trimmed, ":"):
			flush()
			table = strings.TrimSuffix(strings.TrimPrefix(trimmed, "Table "), ":")
			continue
		case strings.HasPrefix(line, "\t"):
			if cur == nil {
				return nil, fmt.Errorf("bird routes: line %d: detail %q before any route", i+1, trimmed)
			}
			if m := birdViaRE.FindStringSubmatch(trimmed); m != nil {
				a, err := netip.ParseAddr(m[1])
				if err != nil {
					return nil, fmt.Errorf("bird routes: line %d: %q: %w", i+1, trimmed, err)
				}
				cur.NextHops = append(cur.NextHops, a)
				cur.Ifaces = append(cur.Ifaces, m[2])
				continue
			}
			if m := birdDevRE.FindStringSubmatch(trimmed); m != nil {
				cur.Ifaces = append(cur.Ifaces, m[1])
				continue
			}
			if m := birdAttrRE.FindStringSubmatch(trimmed); m != nil {
				k, v := m[1], strings.TrimSpace(m[2])
				cur.Attrs[k] = v
				switch k {
				case "Type":
					cur.Source, _, _ = strings.Cut(v, " ")
				case "BGP.origin":
					cur.Origin = v
				case "BGP.next_hop":
					// May list a link-local second address (IPv6).
					f, _, _ := strings.Cut(v, " ")
					cur.BGPNextHop, _ = netip.ParseAddr(f)
				case "BGP.as_path":
					for _, f := range strings.Fields(v) {
						n, err := strconv.ParseUint(strings.Trim(f, "{}"), 10, 32)
						if err != nil {
							return nil, fmt.Errorf("bird routes: line %d: AS path %q: %w", i+1, v, err)
						}
						cur.ASPath = append(cur.ASPath, uint32(n))
					}
				}
			}
			continue
		}
		m := birdRouteRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("bird routes: line %d: cannot parse %q", i+1, line)
		}
		flush()
		p := last
		if m[1] != "" {
			var err error
			if p, err = netip.ParsePrefix(m[1]); err != nil {
				return nil, fmt.Errorf("bird routes: line %d: %w", i+1, err)
			}
			last = p
		} else if !p.IsValid() {
			return nil, fmt.Errorf("bird routes: line %d: route without a network", i+1)
		}
		pref, _ := strconv.Atoi(m[7])
		r := BIRDRoute{Table: table, Prefix: p, Type: m[2], Protocol: m[3], Since: m[4], Primary: m[6] == "*", Preference: pref, Attrs: map[string]string{}}
		if m[5] != "" {
			if r.From, _ = netip.ParseAddr(m[5]); !r.From.IsValid() {
				return nil, fmt.Errorf("bird routes: line %d: bad from address %q", i+1, m[5])
			}
		}
		// The one-line form ("show route" without "all") has the gateway
		// on the route's line in BIRD 1; BIRD 2 puts it on the next line.
		cur = &r
	}
	flush()
	return routes, nil
}

// BIRDProtocol is one protocol of "birdc show protocols [all]".
type BIRDProtocol struct {
	// Name, Proto ("BGP", "Static", ...), Table, State ("up", "start",
	// "down", ...), Since and Info are the summary line's columns; Info is
	// "Established", "Active", "Connect", "Idle", ... for BGP, followed by
	// the last error ("Active        Socket: Connection closed").
	Name, Proto, Table, State, Since, Info string
	// BGPState is the first word of Info for a BGP protocol, or "BGP
	// state:" of the details.
	BGPState string
	// The details of "show protocols all" (BGP protocols).
	NeighborAddress netip.Addr
	NeighborAS      uint32
	LocalAS         uint32
	NeighborID      string
	LastError       string
	// LocalGR and NeighborGR say graceful restart is among the local and
	// the neighbor's capabilities (so it is negotiated when both are set);
	// NeighborRestartTime is the neighbor's restart time.
	LocalGR, NeighborGR bool
	NeighborRestartTime int
	// GRActive says the neighbor is restarting and BIRD keeps its routes
	// as stale ("Neighbor graceful restart active").
	GRActive bool
	// Imported, Exported and Preferred count the routes of the first
	// channel ("Routes: 2 imported, 1 exported, 2 preferred").
	Imported, Exported, Preferred int
	// InputFilter is the first channel's import filter.
	InputFilter string
	// Details are the indented lines below the summary, trimmed.
	Details []string
}

// Established says the BGP session is up.
func (p BIRDProtocol) Established() bool { return p.BGPState == "Established" }

// GracefulRestart says both sides announced the graceful-restart
// capability.
func (p BIRDProtocol) GracefulRestart() bool { return p.LocalGR && p.NeighborGR }

var birdRoutesCountRE = regexp.MustCompile(`^Routes:\s+(\d+) imported, (?:(\d+) filtered, )?(\d+) exported, (\d+) preferred`)

// ParseBIRDProtocols parses "birdc show protocols [all]".
func ParseBIRDProtocols(out string) ([]BIRDProtocol, error) {
	var protos []BIRDProtocol
	var cur *BIRDProtocol
	capSection, lastCap := "", ""
	channels := 0
	flush := func() {
		if cur != nil {
			protos = append(protos, *cur)
			cur = nil
		}
	}
	for i, line := range strings.Split(stripBIRDBanner(out), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		if strings.HasPrefix(line, "Name ") && strings.Contains(line, "Proto") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur == nil {
				return nil, fmt.Errorf("bird protocols: line %d: detail %q before any protocol", i+1, trimmed)
			}
			cur.Details = append(cur.Details, trimmed)
			indent := len(line) - len(strings.TrimLeft(line, " \t"))
			k, v, hasColon := strings.Cut(trimmed, ":")
			v = strings.TrimSpace(v)
			if indent <= 4 {
				capSection, lastCap = "", ""
			}
			switch {
			case indent == 4 && trimmed == "Local capabilities":
				capSection = "local"
			case indent == 4 && trimmed == "Neighbor capabilities":
				capSection = "neighbor"
			case indent <= 2 && strings.HasPrefix(trimmed, "Channel "):
				channels++
			case capSection != "" && indent == 6:
				lastCap = trimmed
				if trimmed == "Graceful restart" {
					if capSection == "local" {
						cur.LocalGR = true
					} else {
						cur.NeighborGR = true
					}
				}
			case capSection == "neighbor" && lastCap == "Graceful restart" && k == "Restart time":
				cur.NeighborRestartTime, _ = strconv.Atoi(v)
			case capSection == "" && hasColon:
				switch k {
				case "BGP state":
					cur.BGPState = v
				case "Neighbor address":
					cur.NeighborAddress, _ = netip.ParseAddr(v)
				case "Neighbor AS":
					n, _ := strconv.ParseUint(v, 10, 32)
					cur.NeighborAS = uint32(n)
				case "Local AS":
					n, _ := strconv.ParseUint(v, 10, 32)
					cur.LocalAS = uint32(n)
				case "Neighbor ID":
					cur.NeighborID = v
				case "Last error":
					cur.LastError = v
				case "Input filter":
					if channels == 1 {
						cur.InputFilter = v
					}
				case "Routes":
					if m := birdRoutesCountRE.FindStringSubmatch(trimmed); m != nil && channels == 1 {
						cur.Imported, _ = strconv.Atoi(m[1])
						cur.Exported, _ = strconv.Atoi(m[3])
						cur.Preferred, _ = strconv.Atoi(m[4])
					}
				}
			}
			if trimmed == "Neighbor graceful restart active" {
				cur.GRActive = true
			}
			continue
		}
		flush()
		capSection, lastCap, channels = "", "", 0
		f := strings.Fields(line)
		if len(f) < 5 {
			return nil, fmt.Errorf("bird protocols: line %d: cannot parse %q", i+1, line)
		}
		// Since is one word with "iso short" time formats, two with "iso
		// long" (date and time).
		n := 5
		if len(f) > 5 && birdTimeRE.MatchString(f[5]) {
			n = 6
		}
		p := BIRDProtocol{Name: f[0], Proto: f[1], Table: f[2], State: f[3], Since: strings.Join(f[4:n], " ")}
		p.Info = strings.Join(f[n:], " ")
		// Keep Info's inner spacing: the rest of the line after Since.
		if idx := strings.Index(line, f[n-1]); idx >= 0 && len(f) > n {
			p.Info = strings.TrimSpace(line[idx+len(f[n-1]):])
		}
		if p.Proto == "BGP" && p.Info != "" {
			p.BGPState, _, _ = strings.Cut(p.Info, " ")
		}
		cur = &p
	}
	flush()
	return protos, nil
}

// Protocols returns "show protocols all", parsed.
func (b *BIRD) Protocols() ([]BIRDProtocol, error) {
	out, err := b.Birdc("show", "protocols", "all")
	if err != nil {
		return nil, err
	}
	return ParseBIRDProtocols(out)
}

// Protocol returns the protocol named name, or the BGP protocol whose
// neighbor address is name.
func (b *BIRD) Protocol(name string) (BIRDProtocol, error) {
	protos, err := b.Protocols()
	if err != nil {
		return BIRDProtocol{}, err
	}
	return findBIRDProtocol(protos, name)
}

func findBIRDProtocol(protos []BIRDProtocol, name string) (BIRDProtocol, error) {
	a, _ := netip.ParseAddr(name)
	for _, p := range protos {
		if p.Name == name || (a.IsValid() && p.NeighborAddress == a) {
			return p, nil
		}
	}
	return BIRDProtocol{}, fmt.Errorf("bird: no protocol %s", name)
}

// Routes returns "show route all", parsed, with Stale set on the routes of
// BGP protocols in graceful restart.
func (b *BIRD) Routes() ([]BIRDRoute, error) {
	protos, err := b.Protocols()
	if err != nil {
		return nil, err
	}
	out, err := b.Birdc("show", "route", "all")
	if err != nil {
		return nil, err
	}
	routes, err := ParseBIRDRoutes(out)
	if err != nil {
		return nil, err
	}
	MarkStaleBIRDRoutes(routes, protos)
	return routes, nil
}

// MarkStaleBIRDRoutes sets Stale on the routes of protocols in graceful
// restart (BIRDProtocol.GRActive).
func MarkStaleBIRDRoutes(routes []BIRDRoute, protos []BIRDProtocol) {
	gr := map[string]bool{}
	for _, p := range protos {
		if p.GRActive {
			gr[p.Name] = true
		}
	}
	for i := range routes {
		routes[i].Stale = gr[routes[i].Protocol]
	}
}

// RoutesFor returns the routes for prefix.
func (b *BIRD) RoutesFor(prefix string) ([]BIRDRoute, error) {
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return nil, err
	}
	routes, err := b.Routes()
	if err != nil {
		return nil, err
	}
	var out []BIRDRoute
	for _, r := range routes {
		if r.Prefix == p.Masked() {
			out = append(out, r)
		}
	}
	return out, nil
}

// WaitRoute waits until BIRD's selected route for prefix is learned over
// BGP with nextHop ("" for any) as its BGP next hop, and returns it.
func (b *BIRD) WaitRoute(prefix, nextHop string, timeout time.Duration) (BIRDRoute, error) {
	var want netip.Addr
	if nextHop != "" {
		var err error
		if want, err = netip.ParseAddr(nextHop); err != nil {
			return BIRDRoute{}, err
		}
	}
	var got BIRDRoute
	err := Eventually(timeout, 200*time.Millisecond, func() error {
		rs, err := b.RoutesFor(prefix)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if !r.Primary || r.Source != "BGP" {
				continue
			}
			if want.IsValid() && r.BGPNextHop != want {
				return fmt.Errorf("bird %s: %s has next hop %s, want %s", b.Name, prefix, r.BGPNextHop, want)
			}
			got = r
			return nil
		}
		return fmt.Errorf("bird %s: no BGP route for %s (%d others)", b.Name, prefix, len(rs))
	})
	return got, err
}

// WaitNoRoute waits until BIRD has no BGP route for prefix.
func (b *BIRD) WaitNoRoute(prefix string, timeout time.Duration) error {
	return Eventually(timeout, 200*time.Millisecond, func() error {
		rs, err := b.RoutesFor(prefix)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Source == "BGP" {
				return fmt.Errorf("bird %s: still a route for %s from %s via %s", b.Name, prefix, r.Protocol, r.BGPNextHop)
			}
		}
		return nil
	})
}

// WaitEstablished waits until the BGP session with peer (a protocol name
// or a neighbor address) is Established and returns the protocol.
func (b *BIRD) WaitEstablished(peer string, timeout time.Duration) (BIRDProtocol, error) {
	return b.WaitProtocol(peer, timeout, func(p BIRDProtocol) error {
		if !p.Established() {
			return fmt.Errorf("bird %s: %s is %s %q", b.Name, p.Name, p.State, p.Info)
		}
		return nil
	})
}

// WaitProtocol waits until ok accepts the protocol peer (a name or a
// neighbor address) and returns it.
func (b *BIRD) WaitProtocol(peer string, timeout time.Duration, ok func(BIRDProtocol) error) (BIRDProtocol, error) {
	var got BIRDProtocol
	err := Eventually(timeout, 200*time.Millisecond, func() error {
		p, err := b.Protocol(peer)
		if err != nil {
			return err
		}
		got = p
		return ok(p)
	})
	return got, err
}

// KernelRoutes returns "ip route show proto bird" in BIRD's namespace.
func (b *BIRD) KernelRoutes() (string, error) {
	res, err := b.lab.Exec("", "ip", "-n", b.NS, "route", "show", "proto", "bird")
	return res.Stdout, err
}

// BIRDPeer is what FabricBGPOptions says about one calyx host.
type BIRDPeer struct {
	// AS is the host's AS (default DefaultNodeAS).
	AS uint32
	// Password turns on TCP MD5 for the host's sessions.
	Password string
	// Passive makes BIRD wait for the host to connect.
	Passive bool
}

// FabricBGPOptions configures GatewayBIRDOptions, RouterBIRDOptions and
// StartFabricBGP.
type FabricBGPOptions struct {
	// AS is the data center's AS (default DefaultFabricAS): the gateway's
	// and the routers'.
	AS uint32
	// Hosts overrides the defaults per host name.
	Hosts map[string]BIRDPeer
	// Only, when set, limits the sessions to these hosts (default: every
	// host of the lab).
	Only []string
	// AnnounceDefault makes the gateway announce 0.0.0.0/0 besides the
	// internet's prefix.
	AnnounceDefault bool
	// IPv6 makes the gateway speak IPv6 too (it needs an IPv6 address,
	// Lab.AddGatewayIPv6): an IPv6 channel on its IPv4 sessions (MP-BGP,
	// next hop of its IPv6 announcements its IPv6 address), an IPv6
	// session (protocol BIRDProtocolName(host)+"6") with each host of its
	// segment that has an IPv6 underlay address, and ExternalIPv6 announced.
	// The routers stay IPv4-only.
	IPv6 bool
	// GracefulRestartTime, NoGracefulRestart and Debug are passed on (see
	// BIRDOptions).
	GracefulRestartTime int
	NoGracefulRestart   bool
	Debug               bool
}

func (o FabricBGPOptions) hosts(l *Lab) []*Host {
	var out []*Host
	for _, h := range l.Hosts() {
		if len(o.Only) == 0 || slices.Contains(o.Only, h.Name) {
			out = append(out, h)
		}
	}
	return out
}

func (o FabricBGPOptions) neighbor(h *Host, multihop int, local netip.Addr) BIRDNeighbor {
	p := o.Hosts[h.Name]
	return BIRDNeighbor{Name: BIRDProtocolName(h.Name), Address: h.Underlay.Addr(), AS: p.AS, Password: p.Password, Passive: p.Passive, Multihop: multihop, Local: local}
}

func (o FabricBGPOptions) base(ns string, id netip.Addr) BIRDOptions {
	return BIRDOptions{NS: ns, RouterID: id, AS: o.AS, GracefulRestartTime: o.GracefulRestartTime, NoGracefulRestart: o.NoGracefulRestart, Debug: o.Debug}
}

// GatewayBIRDOptions is the data center's gateway as a BGP router: router
// id and source address its segment address, one session per host (hosts
// on the gateway's segment directly, the others multihop (TTL 2) through
// the router between the segments, whose next hops BIRD resolves with a
// route per other segment via that router), announcing the internet's
// prefix (and the default route with AnnounceDefault), installing what it
// learns in its kernel table.
func (l *Lab) GatewayBIRDOptions(o FabricBGPOptions) (BIRDOptions, error) {
	g := l.Gateway()
	if g == nil {
		return BIRDOptions{}, fmt.Errorf("lab %s has no gateway (AddGateway)", l.Prefix)
	}
	bo := o.base(g.NS, g.Address.Addr())
	bo.Name = g.Name
	bo.Announce = []netip.Prefix{g.Internet.Masked()}
	if o.AnnounceDefault {
		bo.Announce = append(bo.Announce, netip.MustParsePrefix("0.0.0.0/0"))
	}
	if o.IPv6 {
		if !g.Address6.IsValid() {
			return BIRDOptions{}, fmt.Errorf("gateway %s: IPv6 BGP without an IPv6 address (AddGatewayIPv6)", g.Name)
		}
		bo.IPv6, bo.Address6 = true, g.Address6.Addr()
		bo.Announce = append(bo.Announce, netip.MustParsePrefix(ExternalIPv6))
	}
	resolved := map[*Segment]bool{}
	for _, h := range o.hosts(l) {
		if h.Segment == g.Segment {
			bo.Neighbors = append(bo.Neighbors, o.neighbor(h, 0, g.Address.Addr()))
			if o.IPv6 && h.Underlay6.IsValid() {
				n := o.neighbor(h, 0, g.Address6.Addr())
				n.Name, n.Address = BIRDProtocolName(h.Name)+"6", h.Underlay6.Addr()
				bo.Neighbors = append(bo.Neighbors, n)
			}
			continue
		}
		via, err := l.routerBetween(g.Segment, h.Segment)
		if err != nil {
			return BIRDOptions{}, fmt.Errorf("gateway BGP session with %s: %w", h.Name, err)
		}
		bo.Neighbors = append(bo.Neighbors, o.neighbor(h, 2, g.Address.Addr()))
		if !resolved[h.Segment] {
			resolved[h.Segment] = true
			bo.Resolve = append(bo.Resolve, BIRDStatic{Prefix: h.Segment.Gateway.Masked(), Via: via})
		}
	}
	return bo, nil
}

// RouterBIRDOptions is router r as a BGP router of the data center: one
// direct session per host on any of its segments, from its leg on that
// segment, installing what it learns in its kernel table (so that it
// forwards unencapsulated workload traffic between segments), announcing
// the gateway's internet (next hop itself) when the lab has a gateway.
func (l *Lab) RouterBIRDOptions(r *Router, o FabricBGPOptions) (BIRDOptions, error) {
	if r == nil || len(r.Legs) == 0 {
		return BIRDOptions{}, errors.New("router BGP: no router")
	}
	bo := o.base(r.NS, r.Legs[0].Address.Addr())
	bo.Name = r.Name
	if g := l.Gateway(); g != nil {
		bo.Announce = []netip.Prefix{g.Internet.Masked()}
	}
	for _, h := range o.hosts(l) {
		leg, err := r.Leg(h.Segment.Name)
		if err != nil {
			continue
		}
		bo.Neighbors = append(bo.Neighbors, o.neighbor(h, 0, leg.Address.Addr()))
	}
	return bo, nil
}

// FabricBGP is the data center's BGP routers: BIRD on the gateway and on
// every router.
type FabricBGP struct {
	Gateway *BIRD
	Routers []*BIRD
}

// All returns the gateway's BIRD followed by the routers'.
func (f *FabricBGP) All() []*BIRD {
	out := []*BIRD{}
	if f.Gateway != nil {
		out = append(out, f.Gateway)
	}
	return append(out, f.Routers...)
}

// Stop stops every BIRD of the fabric.
func (f *FabricBGP) Stop() error {
	var errs []error
	for _, b := range f.All() {
		errs = append(errs, b.Stop())
	}
	return errors.Join(errs...)
}

// StartFabricBGP starts BIRD on the gateway (GatewayBIRDOptions) and on
// every router (RouterBIRDOptions), all in AS o.AS, each peering with the
// hosts. The gateway's and the routers' BIRDs do not peer with each other:
// each learns every host's routes from the host itself.
func (l *Lab) StartFabricBGP(o FabricBGPOptions) (*FabricBGP, error) {
	f := &FabricBGP{}
	fail := func(err error) (*FabricBGP, error) {
		_ = f.Stop()
		return nil, err
	}
	gbo, err := l.GatewayBIRDOptions(o)
	if err != nil {
		return nil, err
	}
	if f.Gateway, err = l.StartBIRD(gbo); err != nil {
		return fail(err)
	}
	for _, r := range l.Routers() {
		rbo, err := l.RouterBIRDOptions(r, o)
		if err != nil {
			return fail(err)
		}
		b, err := l.StartBIRD(rbo)
		if err != nil {
			return fail(err)
		}
		f.Routers = append(f.Routers, b)
	}
	return f, nil
}

// BIRDProtocolNames returns the names of protos, sorted (for messages).
func BIRDProtocolNames(protos []BIRDProtocol) []string {
	var out []string
	for _, p := range protos {
		out = append(out, p.Name+"="+p.State+"/"+p.Info)
	}
	sort.Strings(out)
	return out
}
