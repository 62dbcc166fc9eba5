package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command is one bounded command, optionally run inside a namespace.
type Command struct {
	// NS is the network namespace to run in ("ip netns exec NS ..."); empty
	// means the root namespace.
	NS string
	// Args is the program and its arguments.
	Args []string
	// Stdin, when non-empty, is fed to the command's standard input.
	Stdin string
	// Timeout bounds the command; zero means the lab's CommandTimeout.
	Timeout time.Duration
}

// Result is what a finished command produced.
type Result struct {
	Stdout, Stderr string
	// ExitCode is the exit status, or -1 when the command did not exit
	// normally (killed, timed out, failed to start).
	ExitCode int
	// TimedOut is set when the command was killed at its timeout.
	TimedOut bool
}

// Combined returns stdout followed by stderr, for messages.
func (r Result) Combined() string {
	switch {
	case r.Stderr == "":
		return r.Stdout
	case r.Stdout == "":
		return r.Stderr
	}
	return r.Stdout + "\n" + r.Stderr
}

// argv returns the full command line for a command in ns.
func argv(ns string, args []string) []string {
	if ns == "" {
		return args
	}
	return append([]string{"ip", "netns", "exec", ns}, args...)
}

// newCmd builds an exec.Cmd in its own process group, so a timeout kills the
// whole group (ping, iperf3, shells and their children) and a terminal's
// Ctrl-C reaches only the lab process, which then cleans up. With a
// cgroup fd (cgfd >= 0) the process is created in that cgroup
// (CLONE_INTO_CGROUP), so it and its children are counted there from
// their first instruction.
func newCmd(ctx context.Context, full []string, cgfd int) *exec.Cmd {
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cgfd >= 0 {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = cgfd
	}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// Do not hang on pipes a grandchild still holds after the kill.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs c to completion (or its timeout). The error is nil only when the
// command exited 0; the Result is filled in either way.
func (l *Lab) Run(c Command) (Result, error) {
	if len(c.Args) == 0 {
		return Result{ExitCode: -1}, errors.New("run: empty command")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = l.opts.CommandTimeout
	}
	full := argv(c.NS, c.Args)
	desc := strings.Join(full, " ")
	l.logf("$ %s", desc)

	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	cmd := newCmd(ctx, full, l.cgroupFD())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if c.Stdin != "" {
		cmd.Stdin = strings.NewReader(c.Stdin)
	}
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: -1}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.TimedOut = true
		return res, fmt.Errorf("%s: timed out after %s: %s", desc, timeout, tail(res.Combined(), 20))
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w: %s", desc, err, tail(res.Combined(), 20))
	}
	return res, nil
}

// Exec runs args in namespace ns ("" for the root namespace) with the lab's
// default timeout.
func (l *Lab) Exec(ns string, args ...string) (Result, error) {
	return l.Run(Command{NS: ns, Args: args})
}

// ExecTimeout runs args in namespace ns with the given timeout.
func (l *Lab) ExecTimeout(timeout time.Duration, ns string, args ...string) (Result, error) {
	return l.Run(Command{NS: ns, Args: args, Timeout: timeout})
}

// ip runs "ip -n NS ARGS..." (or plain "ip ARGS..." for ns ""), which is
// cheaper than "ip netns exec" and needs no mount namespace.
func (l *Lab) ip(ns string, args ...string) error {
	full := []string{"ip"}
	if ns != "" {
		full = append(full, "-n", ns)
	}
	_, err := l.Exec("", append(full, args...)...)
	return err
}

// Proc is a command running in the background. The lab stops it on Close.
type Proc struct {
	lab    *Lab
	desc   string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	// waitErr and timedOut are written before done is closed.
	waitErr  error
	timedOut bool
}

// ExecBackground starts args in namespace ns and returns at once. timeout
// bounds the command's whole life (zero means the lab's CommandTimeout): the
// process group is killed when it expires. Output is collected in memory.
func (l *Lab) ExecBackground(ns string, timeout time.Duration, args ...string) (*Proc, error) {
	if timeout <= 0 {
		timeout = l.opts.CommandTimeout
	}
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return l.startProc(ns, timeout, args, stdout, stderr)
}

func (l *Lab) startProc(ns string, timeout time.Duration, args []string, stdout, stderr io.Writer) (*Proc, error) {
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(l.ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(l.ctx)
	}
	p, err := l.spawn(ctx, cancel, ns, args, stdout, stderr, l.cgroupFD())
	if err != nil {
		return nil, err
	}
	l.track(p)
	return p, nil
}

// startProcDetached starts a long-running process (an agent) that is bound
// neither by a timeout nor by the lab's context: it must survive the lab
// process for "calyx-lab up", and the lab stops it explicitly otherwise.
// Its output goes straight to the file, so no goroutine of ours copies it.
func (l *Lab) startProcDetached(ns string, args []string, out *os.File) (*Proc, error) {
	return l.startDetachedIn(ns, args, out, l.cgroupFD())
}

// startDetachedIn is startProcDetached creating the process in the cgroup
// cgfd (-1: the lab's process's own).
func (l *Lab) startDetachedIn(ns string, args []string, out *os.File, cgfd int) (*Proc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	return l.spawn(ctx, cancel, ns, args, out, out, cgfd)
}

func (l *Lab) spawn(ctx context.Context, cancel context.CancelFunc, ns string, args []string, stdout, stderr io.Writer, cgfd int) (*Proc, error) {
	if len(args) == 0 {
		cancel()
		return nil, errors.New("start: empty command")
	}
	full := argv(ns, args)
	desc := strings.Join(full, " ")
	l.logf("$ %s &", desc)
	cmd := newCmd(ctx, full, cgfd)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	p := &Proc{lab: l, desc: desc, cmd: cmd, done: make(chan struct{})}
	p.stdout, _ = stdout.(*syncBuffer)
	p.stderr, _ = stderr.(*syncBuffer)
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", desc, err)
	}
	go func() {
		err := cmd.Wait()
		p.timedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		p.waitErr = err
		cancel()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id (of the command itself: "ip netns exec" execs
// it in place).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.desc, err)
	}
	return nil
}

// Output returns what the process wrote so far.
func (p *Proc) Output() (stdout, stderr string) {
	if p.stdout != nil {
		stdout = p.stdout.String()
	}
	if p.stderr != nil {
		stderr = p.stderr.String()
	}
	return stdout, stderr
}

// Wait waits up to timeout for the process to exit on its own. It returns an
// error if it is still running then (the process is left running), or if it
// exited non-zero.
func (p *Proc) Wait(timeout time.Duration) (Result, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		out, errOut := p.Output()
		return Result{Stdout: out, Stderr: errOut, ExitCode: -1}, fmt.Errorf("%s: still running after %s", p.desc, timeout)
	}
	return p.result()
}

// Stop sends sig, waits up to grace for the exit, then SIGKILLs the process
// group and waits for that. The result is that of the exit.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) (Result, error) {
	_ = p.Signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.lab.logf("%s: no exit %s after %s, sending SIGKILL", p.desc, sig, grace)
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
	}
	return p.result()
}

func (p *Proc) result() (Result, error) {
	p.lab.forget(p)
	out, errOut := p.Output()
	res := Result{Stdout: out, Stderr: errOut, ExitCode: p.cmd.ProcessState.ExitCode(), TimedOut: p.timedOut}
	if p.timedOut {
		return res, fmt.Errorf("%s: killed at its timeout: %s", p.desc, tail(res.Combined(), 20))
	}
	if p.waitErr != nil {
		return res, fmt.Errorf("%s: %w: %s", p.desc, p.waitErr, tail(res.Combined(), 20))
	}
	return res, nil
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail returns the last n lines of s, trimmed, for error messages.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
