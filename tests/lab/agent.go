package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// agentProc is one running calyx-agent.
type agentProc struct {
	host    string
	proc    *Proc
	logPath string
	logFile *os.File
}

// AgentBinary is the path of calyx-agent in the lab's BinDir.
func (l *Lab) AgentBinary() string { return filepath.Join(l.BinDir, "calyx-agent") }

// CtlBinary is the path of calyxctl in the lab's BinDir.
func (l *Lab) CtlBinary() string { return filepath.Join(l.BinDir, "calyxctl") }

// AgentLogPath is the file an agent's stdout and stderr are appended to
// (across restarts, each start marked by a header line).
func (l *Lab) AgentLogPath(host string) string {
	return filepath.Join(l.Dir, "agent-"+host+".log")
}

// AgentArgs returns the command line StartAgent runs inside the host
// namespace, before extraArgs.
func (l *Lab) AgentArgs(h *Host) []string {
	args := []string{
		l.AgentBinary(),
		"--node", h.Name,
	}
	args = append(args, l.datastoreArgs()...)
	return append(args,
		"--bpffs", h.BPFFS,
		"--underlay", h.UnderlayIface,
		"--metrics", l.opts.MetricsAddr,
		"--log-level", l.opts.AgentLogLevel,
	)
}

// StartAgent starts calyx-agent in the host's namespace with the lab's
// datastore, the host's bpffs directory, eth0 as underlay and extraArgs
// appended (e.g. "--attach", "clsact"), then waits until /readyz answers 200
// inside the host namespace. If the agent exits or does not become ready in
// time it is killed and the error includes the tail of its log.
func (l *Lab) StartAgent(host string, extraArgs ...string) error {
	return l.startAgent(host, "", true, extraArgs)
}

// StartAgentBinary is StartAgent running the calyx-agent at binary in
// place of the lab's (e.g. an earlier build, to upgrade from): the same
// datastore, bpffs directory, underlay and flags.
func (l *Lab) StartAgentBinary(host, binary string, extraArgs ...string) error {
	return l.startAgent(host, binary, true, extraArgs)
}

// StartAgentUnready is StartAgent for an agent that cannot become ready
// yet (its datastore is away): it waits only until /readyz answers at all.
func (l *Lab) StartAgentUnready(host string, extraArgs ...string) error {
	return l.startAgent(host, "", false, extraArgs)
}

func (l *Lab) startAgent(host, binary string, ready bool, extraArgs []string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	l.mu.Lock()
	_, running := l.agents[host]
	l.mu.Unlock()
	if running {
		return fmt.Errorf("agent on %s is already running", host)
	}
	if binary == "" {
		binary = l.AgentBinary()
	}
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("agent binary: %w (run make build, or set the bin dir)", err)
	}
	args := append(l.AgentArgs(h), extraArgs...)
	args[0] = binary
	logPath := l.AgentLogPath(host)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open agent log: %w", err)
	}
	fmt.Fprintf(f, "=== calyx-lab: %s starting: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	// No lifetime bound here: an agent runs until KillAgent or Close, and
	// with "calyx-lab up" it outlives the lab process.
	// With the lab's cgroup, in its agents/ child (Cgroup.Agents).
	p, err := l.startDetachedIn(h.NS, args, f, l.agentCgroupFD())
	if err != nil {
		f.Close()
		return err
	}
	a := &agentProc{host: host, proc: p, logPath: logPath, logFile: f}
	l.mu.Lock()
	l.agents[host] = a
	l.mu.Unlock()

	if err := l.waitReady(h, a, ready); err != nil {
		_ = l.stopAgent(a, syscall.SIGKILL, 5*time.Second)
		return fmt.Errorf("agent on %s: %w\n--- %s (tail) ---\n%s", host, err, logPath, l.logTail(logPath, 40))
	}
	state := "ready"
	if !ready {
		state = "answering"
	}
	l.logf("agent on %s %s (pid %d, log %s)", host, state, p.Pid(), logPath)
	return nil
}

// waitReady polls /readyz inside the host namespace until it answers 200
// (or, with ready false, anything).
func (l *Lab) waitReady(h *Host, a *agentProc, ready bool) error {
	deadline := time.Now().Add(l.opts.AgentReadyTimeout)
	last := errors.New("no answer yet")
	for time.Now().Before(deadline) {
		select {
		case <-a.proc.Done():
			res, _ := a.proc.result()
			return fmt.Errorf("exited with status %d before it was ready", res.ExitCode)
		case <-l.ctx.Done():
			return fmt.Errorf("waiting for readiness: %w", l.ctx.Err())
		default:
		}
		code, body, err := HTTPGet(h.NS, l.opts.MetricsAddr, "/readyz", 2*time.Second)
		switch {
		case err != nil:
			last = err
		case code == 200 || !ready:
			return nil
		default:
			last = fmt.Errorf("/readyz answered %d: %s", code, strings.TrimSpace(body))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %w", l.opts.AgentReadyTimeout, last)
}

// KillAgent sends sig to the host's agent and waits for it to exit. For
// signals other than SIGKILL it escalates to SIGKILL after 10s (and reports
// that as an error, since the agent ignored the signal).
func (l *Lab) KillAgent(host string, sig syscall.Signal) error {
	l.mu.Lock()
	a, ok := l.agents[host]
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("no agent running on %s", host)
	}
	return l.stopAgent(a, sig, 10*time.Second)
}

// StopAgent stops the host's agent with SIGTERM (see KillAgent).
func (l *Lab) StopAgent(host string) error { return l.KillAgent(host, syscall.SIGTERM) }

// AgentPid returns the pid of the host's running agent, or 0.
func (l *Lab) AgentPid(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.agents[host]; ok {
		return a.proc.Pid()
	}
	return 0
}

func (l *Lab) stopAgent(a *agentProc, sig syscall.Signal, grace time.Duration) error {
	l.logf("agent on %s: sending %s", a.host, sig)
	_ = a.proc.Signal(sig)
	var err error
	select {
	case <-a.proc.Done():
	case <-time.After(grace):
		_ = a.proc.Signal(syscall.SIGKILL)
		<-a.proc.Done()
		err = fmt.Errorf("agent on %s did not exit within %s of %s; killed", a.host, grace, sig)
	}
	res, _ := a.proc.result()
	fmt.Fprintf(a.logFile, "=== calyx-lab: %s exited (status %d) after %s\n", time.Now().Format(time.RFC3339Nano), res.ExitCode, sig)
	a.logFile.Close()
	l.mu.Lock()
	if l.agents[a.host] == a {
		delete(l.agents, a.host)
	}
	l.mu.Unlock()
	return err
}

// AgentMetrics returns the host agent's /metrics text (Prometheus format).
func (l *Lab) AgentMetrics(host string) (string, error) {
	h, err := l.Host(host)
	if err != nil {
		return "", err
	}
	code, body, err := HTTPGet(h.NS, l.opts.MetricsAddr, "/metrics", 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("metrics of agent on %s: %w", host, err)
	}
	if code != 200 {
		return body, fmt.Errorf("metrics of agent on %s: status %d", host, code)
	}
	return body, nil
}

// AgentHealth returns the status codes of /healthz and /readyz.
func (l *Lab) AgentHealth(host string) (healthz, readyz int, err error) {
	h, err := l.Host(host)
	if err != nil {
		return 0, 0, err
	}
	if healthz, _, err = HTTPGet(h.NS, l.opts.MetricsAddr, "/healthz", 5*time.Second); err != nil {
		return 0, 0, err
	}
	readyz, _, err = HTTPGet(h.NS, l.opts.MetricsAddr, "/readyz", 5*time.Second)
	return healthz, readyz, err
}

// AgentLog returns the host agent's whole log file.
func (l *Lab) AgentLog(host string) string {
	b, err := os.ReadFile(l.AgentLogPath(host))
	if err != nil {
		return fmt.Sprintf("(cannot read agent log: %v)", err)
	}
	return string(b)
}

func (l *Lab) logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(b), n)
}

// MetricSum parses Prometheus text and returns the sum of every sample of
// the metric called name (all label sets), and whether any sample was found.
func MetricSum(text, name string) (float64, bool, error) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, found, fmt.Errorf("metric line %q: unterminated labels", line)
			}
			rest = rest[end+1:]
		case strings.HasPrefix(rest, " "), strings.HasPrefix(rest, "\t"):
		default:
			continue // a longer metric name sharing the prefix
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, found, fmt.Errorf("metric line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, found, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, found, fmt.Errorf("read metrics: %w", err)
	}
	return sum, found, nil
}
