package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calyxnet/calyx/tests/etcdtest"
)

func TestMain(m *testing.M) {
	// Outages are detected and retried within a second or two rather than
	// several, so the etcd tests stay short. Set once, before any store
	// runs, so no goroutine reads them while they change.
	etcdRequestTimeout = 2 * time.Second
	etcdProbeInterval = 200 * time.Millisecond
	etcdProbeTimeout = time.Second
	etcdRetryMax = 500 * time.Millisecond
	os.Exit(m.Run())
}

// testStore is what both stores offer.
type testStore interface {
	Datastore
	Versioned
	Liveness
}

var _ testStore = (*FileStore)(nil)
var _ testStore = (*EtcdStore)(nil)

// forEachStore runs fn on a fresh file store and on an etcd store backed
// by a real etcd.
func forEachStore(t *testing.T, fn func(t *testing.T, ds testStore)) {
	t.Run("file", func(t *testing.T) { fn(t, openStore(t, t.TempDir())) })
	t.Run("etcd", func(t *testing.T) { fn(t, openEtcdStore(t, etcdtest.Start(t))) })
}

var unsafePrefixChars = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// openEtcdStore opens a store on srv under a prefix of the test's own,
// closed when the test ends.
func openEtcdStore(t *testing.T, srv *etcdtest.Server, opts ...Option) *EtcdStore {
	t.Helper()
	prefix := "/test/" + unsafePrefixChars.ReplaceAllString(t.Name(), "_")
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler)), WithEtcdPrefix(prefix)}, opts...)
	ds, err := Open(srv.URL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds.(*EtcdStore)
}

func TestVersionedCreateUpdate(t *testing.T) {
	forEachStore(t, func(t *testing.T, ds testStore) {
		ctx := context.Background()
		if err := ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		ref := Ref{KindIPAMBlock, "10-65-1-0-26"}
		if _, _, err := ds.Get(ctx, ref); !errors.Is(err, ErrNotFound) || err.Error() != "IPAMBlock/10-65-1-0-26: not found" {
			t.Fatalf("Get of a missing block: %v", err)
		}
		if _, _, err := ds.Get(ctx, Ref{"ipamblocks", "10-65-1-0-26"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get with a kind alias: %v", err)
		}
		if _, _, err := ds.Get(ctx, Ref{"Pod", "x"}); err == nil || !strings.Contains(err.Error(), `unknown kind "Pod"`) {
			t.Fatalf("Get of an unknown kind: %v", err)
		}
		if _, _, err := ds.Get(ctx, Ref{KindConfig, ConfigName}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of the unstored Config: %v", err)
		}

		b := block("10.65.1.0/26", "p", "n1")
		if err := ds.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		err := ds.Create(ctx, b)
		if !errors.Is(err, ErrExists) || err.Error() != "IPAMBlock/10-65-1-0-26: already exists" {
			t.Fatalf("second Create: %v", err)
		}
		got, rev, err := ds.Get(ctx, ref)
		if err != nil || rev == 0 {
			t.Fatalf("Get: %v, %d, %v", got, rev, err)
		}
		if got.(*IPAMBlock).Spec.Node != "n1" {
			t.Fatalf("Get returned %+v", got)
		}

		b2 := block("10.65.1.0/26", "p", "n1", "10.65.1.5", "wa")
		if err := ds.Update(ctx, b2, rev); err != nil {
			t.Fatal(err)
		}
		_, rev2, err := ds.Get(ctx, ref)
		if err != nil || rev2 == rev {
			t.Fatalf("revision after Update: %d (was %d), %v", rev2, rev, err)
		}
		err = ds.Update(ctx, block("10.65.1.0/26", "p", "n1", "10.65.1.6", "wb"), rev)
		if !errors.Is(err, ErrConflict) || !strings.HasPrefix(err.Error(), fmt.Sprintf("IPAMBlock/10-65-1-0-26: conflict: changed since it was read (revision %d, now ", rev)) {
			t.Fatalf("Update at a stale revision: %v", err)
		}
		// Updating to the same content at the right revision is a no-op.
		if err := ds.Update(ctx, b2, rev2); err != nil {
			t.Fatalf("no-op Update: %v", err)
		}

		// Create and Update are validated like Apply, resource and model.
		bad := block("10.65.1.0/26", "p", "n1", "10.66.0.1", "x")
		if err := ds.Update(ctx, bad, rev2); err == nil || !strings.Contains(err.Error(), "10.66.0.1 is outside the block 10.65.1.0/26") {
			t.Errorf("Update of an invalid block: %v", err)
		}
		if err := ds.Create(ctx, block("10.70.0.0/26", "p", "n1")); err == nil ||
			err.Error() != "IPAMBlock/10-70-0-0-26: spec.cidr: 10.70.0.0/26 is not inside IPPool/p (10.65.0.0/16)" {
			t.Errorf("Create outside the pool: %v", err)
		}
		if err := ds.Create(ctx, nil); err == nil {
			t.Errorf("Create(nil) succeeded")
		}

		if err := ds.Delete(ctx, []Ref{ref}); err != nil {
			t.Fatal(err)
		}
		err = ds.Update(ctx, b2, rev2)
		if !errors.Is(err, ErrConflict) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update of a deleted block: %v", err)
		}
		if err := ds.Create(ctx, b); err != nil {
			t.Fatalf("Create after Delete: %v", err)
		}
	})
}

// Many writers racing Create on one name: exactly one wins.
func TestVersionedCreateRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, ds testStore) {
		ctx := context.Background()
		if err := ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		const n = 16
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = ds.Create(ctx, block("10.65.1.0/26", "p", fmt.Sprintf("n%d", i)))
			}()
		}
		close(start)
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Errorf("both %d and %d won", won, i)
			case err == nil:
				won = i
			case !errors.Is(err, ErrExists):
				t.Errorf("writer %d: %v", i, err)
			}
		}
		if won < 0 {
			t.Fatal("nobody won")
		}
		got, _, err := ds.Get(ctx, Ref{KindIPAMBlock, "10-65-1-0-26"})
		if err != nil || got.(*IPAMBlock).Spec.Node != fmt.Sprintf("n%d", won) {
			t.Fatalf("stored %+v, %v; the winner was n%d", got, err, won)
		}
	})
}

// Read-modify-write through Get and Update loses no update: every
// goroutine allocates its addresses in one block.
func TestVersionedUpdateRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, ds testStore) {
		ctx := context.Background()
		ref := Ref{KindIPAMBlock, "10-65-1-0-26"}
		if err := ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16"), block("10.65.1.0/26", "p", "n1")}); err != nil {
			t.Fatal(err)
		}
		const writers, each = 6, 4
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					addr := netip.AddrFrom4([4]byte{10, 65, 1, byte(1 + w*each + i)})
					for {
						r, rev, err := ds.Get(ctx, ref)
						if err != nil {
							errs <- err
							return
						}
						b := deepCopy(r).(*IPAMBlock)
						if b.Spec.Allocations == nil {
							b.Spec.Allocations = map[netip.Addr]string{}
						}
						b.Spec.Allocations[addr] = fmt.Sprintf("w%d", w)
						err = ds.Update(ctx, b, rev)
						if errors.Is(err, ErrConflict) {
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						break
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		r, _, err := ds.Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(r.(*IPAMBlock).Spec.Allocations); n != writers*each {
			t.Fatalf("%d allocations, want %d: updates were lost", n, writers*each)
		}
	})
}

func TestFileStoreHasNoLiveness(t *testing.T) {
	f := openStore(t, t.TempDir())
	if err := f.KeepAlive(context.Background(), "n1", time.Second); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("KeepAlive: %v", err)
	}
	if _, err := f.Live(context.Background()); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("Live: %v", err)
	}
}

// DeleteIf deletes only at the revision given: a block changed since it
// was read stays (ErrConflict), a gone one says so (ErrConflict and
// ErrNotFound).
func TestVersionedDeleteIf(t *testing.T) {
	forEachStore(t, func(t *testing.T, ds testStore) {
		ctx := context.Background()
		if err := ds.Apply(ctx, []Resource{pool("p", "10.65.0.0/16")}); err != nil {
			t.Fatal(err)
		}
		ref := Ref{KindIPAMBlock, "10-65-1-0-26"}
		if err := ds.Create(ctx, block("10.65.1.0/26", "p", "n1")); err != nil {
			t.Fatal(err)
		}
		_, rev, err := ds.Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		// Another writer hands out an address meanwhile.
		if err := ds.Update(ctx, block("10.65.1.0/26", "p", "n1", "10.65.1.5", "wa"), rev); err != nil {
			t.Fatal(err)
		}
		if err := ds.DeleteIf(ctx, ref, rev); !errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
			t.Fatalf("DeleteIf at a stale revision: %v, want a conflict", err)
		}
		if _, _, err := ds.Get(ctx, ref); err != nil {
			t.Fatalf("the block went despite the conflict: %v", err)
		}
		_, rev2, _ := ds.Get(ctx, ref)
		if err := ds.DeleteIf(ctx, ref, rev2); err != nil {
			t.Fatalf("DeleteIf at the current revision: %v", err)
		}
		if err := ds.DeleteIf(ctx, ref, rev2); !errors.Is(err, ErrConflict) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("DeleteIf of a gone block: %v", err)
		}
	})
}
