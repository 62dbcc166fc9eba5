package loadgen

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// pipeListener is an in-memory net.Listener: Dial hands one end of a
// net.Pipe to Accept, so the tool is tested without any network.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

func (l *pipeListener) Dial(ctx context.Context, _ string) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestRunBothModes(t *testing.T) {
	ln := newPipeListener()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	sizes := Sizes{Request: 16, Response: 64}
	go func() { served <- Serve(ctx, ln, sizes) }()

	for _, mode := range []Mode{ModeRR, ModeCRR} {
		res, err := Run(context.Background(), Options{Mode: mode, Target: "pipe", Duration: 200 * time.Millisecond,
			Conns: 2, Sizes: sizes, Dial: ln.Dial})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if res.Mode != mode || res.Conns != 2 || res.Transactions == 0 || res.PerSecond <= 0 || res.Errors != 0 {
			t.Errorf("%s: result %+v, want transactions, a rate and no errors", mode, res)
		}
		if res.LatencyP50us <= 0 || res.LatencyP99us < res.LatencyP50us {
			t.Errorf("%s: latency p50 %.1f µs, p99 %.1f µs", mode, res.LatencyP50us, res.LatencyP99us)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// A paced run offers the rate asked for, not more: 400 transactions/s
// over 2 connections for 500 ms is about 200 transactions, where an
// in-memory pipe unpaced does tens of thousands.
func TestRunAtRate(t *testing.T) {
	ln := newPipeListener()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sizes := Sizes{Request: 1, Response: 1}
	go func() { _ = Serve(ctx, ln, sizes) }()
	for _, mode := range []Mode{ModeRR, ModeCRR} {
		res, err := Run(context.Background(), Options{Mode: mode, Target: "pipe", Duration: 500 * time.Millisecond,
			Conns: 2, Sizes: sizes, Dial: ln.Dial, Rate: 400})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if res.Rate != 400 || res.Transactions < 150 || res.Transactions > 210 {
			t.Errorf("%s at 400/s for 500 ms: %d transactions (rate %g), want about 200", mode, res.Transactions, res.Rate)
		}
	}
}

func TestRunFailsWithoutServer(t *testing.T) {
	dial := func(context.Context, string) (net.Conn, error) { return nil, errors.New("refused") }
	res, err := Run(context.Background(), Options{Mode: ModeRR, Target: "nowhere", Duration: 50 * time.Millisecond,
		Conns: 1, Sizes: Sizes{1, 1}, Dial: dial})
	if err == nil || res.Errors == 0 {
		t.Fatalf("run against no server: %+v, %v; want an error and counted errors", res, err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Mode: "tcp_stream", Duration: time.Second, Conns: 1, Sizes: Sizes{1, 1}},
		{Mode: ModeRR, Duration: time.Second, Conns: 0, Sizes: Sizes{1, 1}},
		{Mode: ModeRR, Duration: time.Second, Conns: 1, Sizes: Sizes{0, 1}},
		{Mode: ModeRR, Duration: time.Second, Conns: 1, Sizes: Sizes{1, 1}, Rate: -1},
	} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 100; i++ {
		xs = append(xs, time.Duration(i)*time.Microsecond)
	}
	if p := percentile(xs, 50); p != 50 {
		t.Errorf("p50 = %v, want 50", p)
	}
	if p := percentile(xs, 99); p != 99 {
		t.Errorf("p99 = %v, want 99", p)
	}
	if p := percentile(nil, 99); p != 0 {
		t.Errorf("p99 of nothing = %v", p)
	}
}
