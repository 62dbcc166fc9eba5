// Package loadgen is calyx's small TCP load tool for benchmarks: a server
// that answers fixed-size requests with fixed-size responses, and clients
// that measure the request/response rate over persistent connections (rr)
// and the rate of whole connections (crr: connect, request, response,
// close), with latency percentiles.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// Sizes are the request and response payload sizes in bytes (at least 1).
type Sizes struct {
	Request, Response int
}

func (s Sizes) validate() error {
	if s.Request < 1 || s.Response < 1 {
		return fmt.Errorf("request and response sizes must be at least 1 byte, got %d and %d", s.Request, s.Response)
	}
	return nil
}

// Serve accepts connections on ln until ctx ends: on each, it reads
// requests of s.Request bytes and answers each with s.Response bytes; when
// the client half-closes it closes the connection, so the TIME_WAIT state
// stays on the server side and a connection-rate client does not run out
// of ports.
func Serve(ctx context.Context, ln net.Listener, s Sizes) error {
	if err := s.validate(); err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			serveConn(c, s)
		}()
	}
}

func serveConn(c net.Conn, s Sizes) {
	req := make([]byte, s.Request)
	resp := make([]byte, s.Response)
	for {
		if _, err := io.ReadFull(c, req); err != nil {
			return // EOF: the client is done
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// Mode is what a client measures.
type Mode string

// Client modes.
const (
	// ModeRR is request/response over persistent connections.
	ModeRR Mode = "rr"
	// ModeCRR is one connection per transaction.
	ModeCRR Mode = "crr"
)

// Options configure a client run.
type Options struct {
	Mode     Mode
	Target   string // IP:PORT
	Duration time.Duration
	Conns    int // concurrent connections (workers)
	Sizes    Sizes
	// Rate, when positive, is the offered load in transactions per
	// second over all connections (each worker paces Rate/Conns): the
	// run measures what a fixed load costs rather than the most the path
	// carries. Zero runs as fast as the path allows.
	Rate float64
	// Dial connects to Target; nil means TCP. Tests pass an in-memory one.
	Dial func(ctx context.Context, target string) (net.Conn, error)
}

// Result is what a run measured. Its JSON form is the tool's output.
type Result struct {
	Mode         Mode    `json:"mode"`
	Conns        int     `json:"conns"`
	Rate         float64 `json:"rate,omitempty"`
	Seconds      float64 `json:"seconds"`
	Transactions int64   `json:"transactions"`
	PerSecond    float64 `json:"perSecond"`
	LatencyP50us float64 `json:"latencyP50us"`
	LatencyP99us float64 `json:"latencyP99us"`
	Errors       int64   `json:"errors"`
}

// maxSamples bounds the latency samples each worker keeps (reservoir-free:
// the first ones), so memory stays flat however fast the path is.
const maxSamples = 200000

// Run measures against a running server for o.Duration. It fails when no
// transaction succeeded.
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.Sizes.validate(); err != nil {
		return Result{}, err
	}
	if o.Mode != ModeRR && o.Mode != ModeCRR {
		return Result{}, fmt.Errorf("mode %q: want rr or crr", o.Mode)
	}
	if o.Conns < 1 || o.Duration <= 0 {
		return Result{}, fmt.Errorf("conns (%d) and duration (%s) must be positive", o.Conns, o.Duration)
	}
	if o.Rate < 0 {
		return Result{}, fmt.Errorf("rate %g: want 0 (as fast as possible) or a positive rate", o.Rate)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	type workerResult struct {
		n, errs int64
		lat     []time.Duration
	}
	results := make([]workerResult, o.Conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		wg.Add(1)
		go func(w *workerResult) {
			defer wg.Done()
			if o.Mode == ModeRR {
				w.n, w.errs, w.lat = runRR(ctx, o)
			} else {
				w.n, w.errs, w.lat = runCRR(ctx, o)
			}
		}(&results[i])
	}
	wg.Wait()
	elapsed := time.Since(start)

	// Transactions complete only before the deadline; what runs past it
	// (a worker unblocking) is not measuring time.
	res := Result{Mode: o.Mode, Conns: o.Conns, Rate: o.Rate, Seconds: min(elapsed, o.Duration).Seconds()}
	var lat []time.Duration
	for _, w := range results {
		res.Transactions += w.n
		res.Errors += w.errs
		lat = append(lat, w.lat...)
	}
	if res.Transactions == 0 {
		return res, fmt.Errorf("no transaction with %s succeeded (%d errors)", o.Target, res.Errors)
	}
	res.PerSecond = float64(res.Transactions) / res.Seconds
	slices.Sort(lat)
	res.LatencyP50us = percentile(lat, 50)
	res.LatencyP99us = percentile(lat, 99)
	return res, nil
}

// failed says whether err is a failure rather than the run's deadline
// cutting a transaction short.
func failed(ctx context.Context, err error) bool {
	// A dial cut short by the deadline reports context.DeadlineExceeded.
	return ctx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded)
}

func percentile(sorted []time.Duration, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	i = min(max(i-1, 0), len(sorted)-1)
	return float64(sorted[i].Nanoseconds()) / 1e3
}

// pacer spaces one worker's transactions at a fixed rate: each starts at
// its slot on a fixed schedule, or at once when the worker is behind. A
// worker more than maxLag behind (a stall) starts a new schedule rather
// than catching up in a burst.
type pacer struct {
	interval time.Duration // 0: no pacing
	next     time.Time
}

const maxLag = 50 * time.Millisecond

func newPacer(o Options) *pacer {
	p := &pacer{}
	if o.Rate > 0 {
		p.interval = time.Duration(float64(time.Second) * float64(o.Conns) / o.Rate)
	}
	return p
}

// wait sleeps until the next transaction's slot (or ctx's end) and
// advances the schedule.
func (p *pacer) wait(ctx context.Context) {
	if p.interval <= 0 {
		return
	}
	now := time.Now()
	switch {
	case p.next.IsZero(), now.Sub(p.next) > maxLag:
		p.next = now
	case p.next.After(now):
		t := time.NewTimer(p.next.Sub(now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	p.next = p.next.Add(p.interval)
}

func (o Options) dial(ctx context.Context) (net.Conn, error) {
	if o.Dial != nil {
		return o.Dial(ctx, o.Target)
	}
	return dialTCP(ctx, o.Target)
}

func dialTCP(ctx context.Context, target string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return c, nil
}

// transact writes one request and reads one response.
func transact(c net.Conn, req, resp []byte) error {
	if _, err := c.Write(req); err != nil {
		return err
	}
	_, err := io.ReadFull(c, resp)
	return err
}

func runRR(ctx context.Context, o Options) (n, errs int64, lat []time.Duration) {
	req, resp := make([]byte, o.Sizes.Request), make([]byte, o.Sizes.Response)
	var c net.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	pace := newPacer(o)
	for ctx.Err() == nil {
		if c == nil {
			var err error
			if c, err = o.dial(ctx); err != nil {
				if failed(ctx, err) {
					errs++
					time.Sleep(10 * time.Millisecond)
				}
				continue
			}
			if dl, ok := ctx.Deadline(); ok {
				_ = c.SetDeadline(dl)
			}
		}
		if pace.wait(ctx); ctx.Err() != nil {
			break
		}
		t := time.Now()
		if err := transact(c, req, resp); err != nil {
			if failed(ctx, err) {
				errs++
			}
			c.Close()
			c = nil
			continue
		}
		n++
		if len(lat) < maxSamples {
			lat = append(lat, time.Since(t))
		}
	}
	return n, errs, lat
}

func runCRR(ctx context.Context, o Options) (n, errs int64, lat []time.Duration) {
	req, resp := make([]byte, o.Sizes.Request), make([]byte, o.Sizes.Response)
	var tail [1]byte
	pace := newPacer(o)
	for ctx.Err() == nil {
		if pace.wait(ctx); ctx.Err() != nil {
			break
		}
		t := time.Now()
		c, err := o.dial(ctx)
		if err != nil {
			if failed(ctx, err) {
				errs++
				time.Sleep(time.Millisecond)
			}
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = c.SetDeadline(dl)
		}
		err = transact(c, req, resp)
		if err == nil {
			// Half-close and wait for the server's close: the server
			// holds TIME_WAIT, the client's port is free at once.
			if hc, ok := c.(interface{ CloseWrite() error }); ok {
				if err = hc.CloseWrite(); err == nil {
					if _, rerr := c.Read(tail[:]); rerr != io.EOF {
						err = fmt.Errorf("server did not close: %v", rerr)
					}
				}
			}
		}
		c.Close()
		if err != nil {
			if failed(ctx, err) {
				errs++
			}
			continue
		}
		n++
		if len(lat) < maxSamples {
			lat = append(lat, time.Since(t))
		}
	}
	return n, errs, lat
}
