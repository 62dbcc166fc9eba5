package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// RunRoot is the directory under which every lab keeps its state, one
// sub-directory per run prefix. It is under /run, not /sys, because
// "ip netns exec" remounts /sys and would hide a bpffs mounted there.
const RunRoot = "/run/calyx-lab"

// DefaultMetricsAddr is where every agent serves its metrics, inside its own
// host namespace (each namespace has its own loopback, so the port repeats).
const DefaultMetricsAddr = "127.0.0.1:9091"

// DefaultUnderlay is the gateway address (with prefix) of the segment AddHost
// creates when no segment has been added explicitly.
const DefaultUnderlay = "10.30.0.1/24"

// WorkloadPool is the CIDR the lab's workload addresses come from; it exists
// only inside lab namespaces.
const WorkloadPool = "10.65.0.0/16"

var (
	// prefixRE matches a run prefix: "cx" and four lowercase hex digits.
	prefixRE = regexp.MustCompile(`^cx[0-9a-f]{4}$`)
	// nsRE matches the name of any namespace a lab creates and captures
	// its run prefix.
	nsRE = regexp.MustCompile(`^(cx[0-9a-f]{4})-`)
	// nameRE restricts host, workload and segment names so they are safe in
	// namespace names, file names and YAML without quoting.
	nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
)

// Options configures a lab. The zero value is usable.
type Options struct {
	// BinDir holds calyx-agent and calyxctl. Default: the bin/ directory of
	// the repository containing the working directory (found by walking up
	// to go.mod), else the directory of the running executable.
	BinDir string
	// Prefix forces the run prefix (must match cx + 4 hex digits); default
	// is a random unused one.
	Prefix string
	// Context bounds everything the lab runs; cancelling it kills running
	// commands. Close still cleans up after it is cancelled.
	Context context.Context
	// Logf, when set, receives one line per command run and per step.
	Logf func(format string, args ...any)
	// CommandTimeout bounds each command run without an explicit timeout.
	// Default 30s.
	CommandTimeout time.Duration
	// AgentReadyTimeout bounds how long StartAgent waits for /readyz.
	// Default 30s.
	AgentReadyTimeout time.Duration
	// AgentLogLevel is passed as --log-level to every agent. Default "info".
	AgentLogLevel string
	// MetricsAddr is passed as --metrics to every agent, and is where the
	// lab looks for /readyz and /metrics inside the host namespace.
	// Default DefaultMetricsAddr.
	MetricsAddr string
	// Datastore is the datastore Up and UpMulti give their agents:
	// DatastoreFile (default) or DatastoreEtcd (AddEtcd with TLS, before
	// the agents start). Other labs add an etcd with AddEtcd themselves.
	Datastore string
	// WorkloadKind is the kind of the workloads PlanWorkload and
	// AddWorkload create: KindVeth, KindVM or KindMixed (even-numbered
	// workloads VMs, odd ones veths). Empty means $CALYX_LAB_WORKLOAD
	// (WorkloadKindEnv), else KindVeth.
	WorkloadKind WorkloadKind
	// Cgroup puts every process the lab starts into a cgroup v2 of its
	// own, <cgroup v2 mount>/calyx-bench-<prefix> (see Lab.Cgroup), so
	// their CPU time can be read apart from the rest of the machine. New
	// fails when it cannot be made.
	Cgroup bool
}

// The values of Options.Datastore.
const (
	DatastoreFile = "file"
	DatastoreEtcd = "etcd"
)

// Lab is one running topology. Create it with New and always Close it.
type Lab struct {
	// Prefix is the run prefix found in every namespace and interface name.
	Prefix string
	// Dir is /run/calyx-lab/<prefix>.
	Dir string
	// BPFFS is the bpffs mount point; each host's agent pins under
	// BPFFS/<host>.
	BPFFS string
	// DatastoreDir is the file datastore shared by all agents and calyxctl.
	DatastoreDir string
	// BinDir holds calyx-agent and calyxctl.
	BinDir string

	opts   Options
	ctx    context.Context
	cancel context.CancelFunc

	mu           sync.Mutex
	segments     []*Segment
	routers      []*Router
	gateway      *Gateway
	hosts        []*Host
	workloads    []*Workload
	nextUplink   int
	nextLeg      int
	nextWorkload int
	agents       map[string]*agentProc
	procs        map[*Proc]struct{}
	// relays are the running VMs' relays by workload name.
	relays map[string]*vmRelay
	// outlive is set by Up and UpMulti, whose lab keeps running after
	// this process exits: its VM relays are not tied to this process.
	outlive bool
	// etcd, once AddEtcd made it, is the datastore of agents and calyxctl.
	etcd *Etcd
	// closers are in-process servers (StartEcho, StartHTTP) whose sockets
	// live in lab namespaces; Close closes them before the namespaces go.
	closers map[io.Closer]struct{}
	// cgroup is the lab's own cgroup (Options.Cgroup), nil without.
	cgroup *Cgroup
}

// New creates the lab's working directory, mounts its bpffs and creates the
// datastore directory. Namespaces are created later by AddSegment, AddHost
// and AddWorkload. On error everything New made is removed again.
func New(opts Options) (*Lab, error) {
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 30 * time.Second
	}
	if opts.AgentReadyTimeout <= 0 {
		opts.AgentReadyTimeout = 30 * time.Second
	}
	if opts.AgentLogLevel == "" {
		opts.AgentLogLevel = "info"
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = DefaultMetricsAddr
	}
	switch opts.Datastore {
	case "":
		opts.Datastore = DatastoreFile
	case DatastoreFile, DatastoreEtcd:
	default:
		return nil, fmt.Errorf("invalid datastore %q: want %s or %s", opts.Datastore, DatastoreFile, DatastoreEtcd)
	}
	kind, err := defaultWorkloadKind(opts.WorkloadKind)
	if err != nil {
		return nil, err
	}
	opts.WorkloadKind = kind
	if opts.BinDir == "" {
		opts.BinDir = DefaultBinDir()
	}
	prefix := opts.Prefix
	if prefix == "" {
		p, err := newPrefix()
		if err != nil {
			return nil, err
		}
		prefix = p
	} else if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("invalid lab prefix %q: want cx followed by 4 lowercase hex digits", prefix)
	}

	ctx, cancel := context.WithCancel(opts.Context)
	l := &Lab{
		Prefix:       prefix,
		Dir:          filepath.Join(RunRoot, prefix),
		BinDir:       opts.BinDir,
		opts:         opts,
		ctx:          ctx,
		cancel:       cancel,
		agents:       map[string]*agentProc{},
		procs:        map[*Proc]struct{}{},
		relays:       map[string]*vmRelay{},
		closers:      map[io.Closer]struct{}{},
		nextUplink:   1,
		nextLeg:      1,
		nextWorkload: 1,
	}
	l.BPFFS = filepath.Join(l.Dir, "bpffs")
	l.DatastoreDir = filepath.Join(l.Dir, "datastore")

	if err := l.setupDirs(); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	if opts.Cgroup {
		cg, err := createCgroup(prefix)
		if err != nil {
			return nil, errors.Join(err, l.Close())
		}
		l.cgroup = cg
		l.logf("lab %s: processes in cgroup %s", l.Prefix, cg.Path)
	}
	l.logf("lab %s: state in %s", l.Prefix, l.Dir)
	return l, nil
}

func (l *Lab) setupDirs() error {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return fmt.Errorf("create lab dir: %w", err)
	}
	if err := os.MkdirAll(l.BPFFS, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point: %w", err)
	}
	if err := syscall.Mount("bpf", l.BPFFS, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", l.BPFFS, err)
	}
	if err := os.MkdirAll(l.DatastoreDir, 0o700); err != nil {
		return fmt.Errorf("create datastore dir: %w", err)
	}
	return nil
}

// newPrefix picks a random run prefix that no namespace or state directory
// uses yet.
func newPrefix() (string, error) {
	for range 20 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("random prefix: %w", err)
		}
		p := "cx" + hex.EncodeToString(b[:])
		if _, err := os.Stat(filepath.Join(RunRoot, p)); err == nil {
			continue
		}
		names, err := namespacesWithPrefix(p)
		if err != nil {
			return "", err
		}
		if len(names) == 0 {
			return p, nil
		}
	}
	return "", errors.New("no unused lab prefix found after 20 tries")
}

// DatastoreURL is the --datastore value for agents and calyxctl: the lab's
// etcd once AddEtcd added it, else the file datastore.
func (l *Lab) DatastoreURL() string {
	if e := l.Etcd(); e != nil {
		return e.URL()
	}
	return "file://" + l.DatastoreDir
}

// datastoreArgs returns --datastore and, for an etcd with TLS, the
// certificate flags, as agents and calyxctl take them.
func (l *Lab) datastoreArgs() []string {
	args := []string{"--datastore", l.DatastoreURL()}
	if e := l.Etcd(); e != nil {
		args = append(args, e.ClientArgs()...)
	}
	return args
}

// NSName returns the namespace name the lab uses for name.
func (l *Lab) NSName(name string) string { return l.Prefix + "-" + name }

// Context returns the lab's context; it is cancelled by Close.
func (l *Lab) Context() context.Context { return l.ctx }

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

// Close stops every background process, agent and VM relay the lab started
// (and waits for them; the taps go with their relays), deletes every
// namespace carrying the lab's prefix (which removes the veths in them),
// unmounts the bpffs and removes the lab directory. It works on a partially
// built lab, is idempotent and is bounded in time.
func (l *Lab) Close() error {
	l.mu.Lock()
	procs := make([]*Proc, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	agents := make([]*agentProc, 0, len(l.agents))
	for _, a := range l.agents {
		agents = append(agents, a)
	}
	closers := make([]io.Closer, 0, len(l.closers))
	for c := range l.closers {
		closers = append(closers, c)
	}
	relays := make(map[string]*vmRelay, len(l.relays))
	for n, r := range l.relays {
		relays[n] = r
	}
	l.mu.Unlock()

	var errs []error
	// In-process servers: an open socket would keep its namespace alive
	// after "ip netns delete".
	for _, c := range closers {
		_ = c.Close()
	}
	// Background commands first: they may be talking to the agents.
	for _, p := range procs {
		_, _ = p.Stop(syscall.SIGTERM, 3*time.Second)
		l.forget(p)
	}
	for _, a := range agents {
		if err := l.stopAgent(a, syscall.SIGTERM, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// The VMs after the agents, as a host shuts down its guests last; a
	// relay that ignored SIGTERM is killed, which is no error of the lab.
	for n, r := range relays {
		_ = l.stopRelay(n, r)
	}
	// The datastore last: the agents were using it.
	if e := l.Etcd(); e != nil {
		if err := e.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	l.cancel()
	if l.cgroup != nil {
		l.cgroup.closeFD()
	}
	if err := Reap(l.Prefix); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l *Lab) track(p *Proc) {
	l.mu.Lock()
	l.procs[p] = struct{}{}
	l.mu.Unlock()
}

func (l *Lab) trackCloser(c io.Closer) {
	l.mu.Lock()
	l.closers[c] = struct{}{}
	l.mu.Unlock()
}

func (l *Lab) forgetCloser(c io.Closer) {
	l.mu.Lock()
	delete(l.closers, c)
	l.mu.Unlock()
}

func (l *Lab) forget(p *Proc) {
	l.mu.Lock()
	delete(l.procs, p)
	l.mu.Unlock()
}

// DefaultBinDir returns the bin/ directory of the repository that contains
// the working directory, or, outside a repository, the directory holding the
// running executable (so an installed calyx-lab finds its siblings).
func DefaultBinDir() string {
	if root, err := RepoRoot(); err == nil {
		return filepath.Join(root, "bin")
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Dir(exe)
	}
	return "bin"
}

// RepoRoot walks up from the working directory to the directory containing
// go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
