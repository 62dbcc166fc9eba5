package model

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calyxnet/calyx/tests/etcdtest"
)

func TestFileLeadNotImplemented(t *testing.T) {
	ds := openStore(t, t.TempDir())
	ran := false
	led, err := ds.Lead(context.Background(), "job", func(context.Context) error { ran = true; return nil })
	if led || ran || !errors.Is(err, ErrNotImplemented) {
		t.Errorf("file store Lead = %v, %v (fn ran: %v); want false and ErrNotImplemented", led, err, ran)
	}
}

// Lead runs the job in one store at a time, frees the lock as soon as the
// job ends, and cancels a job whose lease is lost.
func TestEtcdElect(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	a, b := openEtcdStore(t, srv), openEtcdStore(t, srv)
	if _, err := a.Lead(ctx, "Not_A_Name", func(context.Context) error { return nil }); err == nil {
		t.Error("Lead took an invalid lock name")
	}

	// While a leads, b does not; b leads once a is done.
	errJob := errors.New("job failed")
	var bLed bool
	var bErr error
	led, err := a.Lead(ctx, "job", func(context.Context) error {
		bLed, bErr = b.Lead(ctx, "job", func(context.Context) error {
			t.Error("b ran the job while a held the lock")
			return nil
		})
		return errJob
	})
	if !led || !errors.Is(err, errJob) {
		t.Errorf("a.Lead = %v, %v; want true and the job's error", led, err)
	}
	if bLed || bErr != nil {
		t.Errorf("b.Lead while a held the lock = %v, %v; want false, nil", bLed, bErr)
	}
	if led, err := b.Lead(ctx, "job", func(context.Context) error { return nil }); !led || err != nil {
		t.Errorf("b.Lead after a was done = %v, %v; want true, nil (the lock is freed at once)", led, err)
	}

	// Many contenders in two stores: never two jobs at once.
	var inside, most, runs atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(ds *EtcdStore) {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				_, err := ds.Lead(ctx, "job", func(context.Context) error {
					n := inside.Add(1)
					if n > most.Load() {
						most.Store(n)
					}
					runs.Add(1)
					time.Sleep(2 * time.Millisecond)
					inside.Add(-1)
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			}
		}([]*EtcdStore{a, b}[i%2])
	}
	wg.Wait()
	if most.Load() != 1 || runs.Load() == 0 {
		t.Errorf("concurrent Lead: at most %d jobs at once, %d runs; want 1 and some", most.Load(), runs.Load())
	}

	// The lease lost (revoked behind the store's back): the job's context
	// ends, and another store may lead.
	cli := srv.Client(t)
	led, err = a.Lead(ctx, "job", func(jctx context.Context) error {
		resp, err := cli.Get(ctx, a.lockPrefix()+"job/", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lock keys: %v, %v; want one", resp, err)
		}
		if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-jctx.Done():
		case <-time.After(waitFor):
			t.Error("the job's context did not end when its lease was lost")
		}
		if led, err := b.Lead(ctx, "job", func(context.Context) error { return nil }); !led || err != nil {
			t.Errorf("b.Lead after a's lease was lost = %v, %v; want true, nil", led, err)
		}
		return jctx.Err()
	})
	if !led || !errors.Is(err, context.Canceled) {
		t.Errorf("a.Lead with its lease lost = %v, %v; want true and context.Canceled", led, err)
	}

	// Close ends a running job and waits for it; later calls fail.
	started, closed := make(chan struct{}), make(chan struct{})
	go func() {
		<-started
		a.Close()
		close(closed)
	}()
	led, err = a.Lead(ctx, "job", func(jctx context.Context) error {
		close(started)
		<-jctx.Done()
		return jctx.Err()
	})
	<-closed
	if !led || err == nil {
		t.Errorf("a.Lead ended by Close = %v, %v; want true and an error", led, err)
	}
	if _, err := a.Lead(ctx, "job", func(context.Context) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Lead after Close = %v; want ErrClosed", err)
	}
	resp, err := cli.Get(ctx, a.lockPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Errorf("lock keys left: %v, %v", resp, err)
	}
}
