package kernel

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// fakeSubscriptions hands out subscriptions the test ends at will, as the
// kernel ends one whose socket overflowed (ENOBUFS), and can refuse new
// ones.
type fakeSubscriptions struct {
	mu     sync.Mutex
	chans  []chan netlink.LinkUpdate
	refuse int // how many subscriptions to refuse next
}

func (f *fakeSubscriptions) subscribe(ch chan netlink.LinkUpdate, done chan struct{}, onError func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse > 0 {
		f.refuse--
		return errors.New("socket: no buffer space available")
	}
	f.chans = append(f.chans, ch)
	return nil
}

func (f *fakeSubscriptions) current() chan netlink.LinkUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.chans[len(f.chans)-1]
}

func (f *fakeSubscriptions) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.chans)
}

// A subscription that ends (events lost) is made again, retried while it
// is refused, the error is reported, and the caller is told to look at
// every link; updates then arrive as before.
func TestWatchLinksResubscribes(t *testing.T) {
	f := &fakeSubscriptions{}
	var changes atomic.Int32
	var mu sync.Mutex
	var errs []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := watchLinks(ctx, f.subscribe, func() { changes.Add(1) }, func(err error) {
		mu.Lock()
		errs = append(errs, err.Error())
		mu.Unlock()
	}, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	f.current() <- netlink.LinkUpdate{}
	waitFor(t, "the first update", func() bool { return changes.Load() == 1 })

	f.mu.Lock()
	f.refuse = 2
	f.mu.Unlock()
	close(f.current())
	waitFor(t, "a new subscription", func() bool { return f.count() == 2 })
	waitFor(t, "the change after it", func() bool { return changes.Load() == 2 })
	f.current() <- netlink.LinkUpdate{}
	waitFor(t, "an update on the new subscription", func() bool { return changes.Load() == 3 })
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 3 || !strings.Contains(errs[0], "subscribing again") || !strings.Contains(errs[1], "no buffer space") {
		t.Errorf("errors reported: %q; want the end and the two refusals", errs)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
