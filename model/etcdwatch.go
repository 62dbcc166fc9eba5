package model

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch sends the current snapshot, then a new one after each change under
// the store's prefix, whoever made it. Changes are coalesced as the file
// store's Watch does (a snapshot goes out once no change has arrived for
// the debounce interval, or a burst has lasted its limit), and only
// the keys that changed are parsed again. The channel holds at most one
// snapshot: a slow reader gets the latest one, never a backlog.
//
// Watch is fail static. While etcd is unreachable (a probe every second
// tells) the channel stays open and sends nothing, so a reader keeps what
// it has; WithStatus hears of it. When etcd answers again the watch
// resumes from the last revision it saw; if etcd no longer has that
// history (compaction), or the watch is lost otherwise, it reads the whole
// prefix again and sends a full snapshot. If etcd is unreachable when Watch
// is called, the first snapshot is sent once it can be read.
//
// The channel is closed only when ctx ends or the store is closed. Watch
// returns an error only after Close (ErrClosed).
func (e *EtcdStore) Watch(ctx context.Context) (<-chan *Snapshot, error) {
	if !e.startWorker() {
		return nil, ErrClosed
	}
	out := make(chan *Snapshot, 1)
	w := &etcdWatch{e: e, out: out}
	go func() {
		defer e.workers.Done()
		defer close(out)
		ctx, cancel := e.workerContext(ctx)
		defer cancel()
		w.run(ctx)
	}()
	return out, nil
}

type etcdWatch struct {
	e   *EtcdStore
	out chan *Snapshot

	cur  *Snapshot // the last snapshot sent
	next *Snapshot // cur with the changes not sent yet; nil when none
	rev  int64     // every change up to rev is in cur or next

	timer      *time.Timer
	armed      bool
	burstStart time.Time

	probe  chan error // results of the reachability probe
	outage bool       // a probe failed since the watch was (re)opened
}

type followEnd int

const (
	followDone   followEnd = iota // ctx ended
	followResync                  // history lost or watch broken: read everything
	followResume                  // etcd is back after an outage: reopen at rev+1
)

func (w *etcdWatch) run(ctx context.Context) {
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	defer w.timer.Stop()
	w.probe = make(chan error, 1)
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		w.probeLoop(ctx)
	}()
	defer probes.Wait()

	var retry retryDelay
	resync := true
	for {
		if resync {
			if !w.resync(ctx, &retry) {
				return
			}
			resync = false
		}
		start := time.Now()
		switch w.follow(ctx) {
		case followDone:
			return
		case followResync:
			// A watch that keeps breaking at once must not spin.
			if time.Since(start) > etcdRetryMax {
				retry.reset()
			}
			if !sleepCtx(ctx, retry.next()) {
				return
			}
			resync = true
		case followResume:
		}
	}
}

// resync reads the whole prefix, retrying with backoff until it can, and
// sends it as a full snapshot. It returns false when ctx ended.
func (w *etcdWatch) resync(ctx context.Context, retry *retryDelay) bool {
	for {
		s, _, err := w.e.read(ctx)
		if err == nil {
			w.cur, w.next, w.rev = s, nil, int64(s.Revision)
			w.timer.Stop()
			w.armed = false
			w.send(s)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		w.e.opts.logger.Debug("datastore: reading etcd failed; retrying", "err", err)
		if !sleepCtx(ctx, retry.next()) {
			return false
		}
	}
}

// follow watches from rev+1 until the watch ends, applying changes and
// sending snapshots as they settle.
func (w *etcdWatch) follow(ctx context.Context) followEnd {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.e.cli.Watch(wctx, w.e.resPrefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1), clientv3.WithProgressNotify())
	log := w.e.opts.logger
	for {
		select {
		case <-ctx.Done():
			return followDone
		case resp, ok := <-wch:
			if ctx.Err() != nil {
				return followDone
			}
			if !ok {
				log.Warn("datastore: etcd watch closed; reading everything again", "revision", w.rev)
				return followResync
			}
			if resp.CompactRevision != 0 {
				log.Info("datastore: etcd history compacted past the watch; reading everything again",
					"revision", w.rev, "compacted", resp.CompactRevision)
				return followResync
			}
			if err := resp.Err(); err != nil {
				w.e.observe(ctx, err)
				log.Warn("datastore: etcd watch lost; reading everything again", "revision", w.rev, "err", err)
				return followResync
			}
			w.e.setStatus(true, "")
			if resp.IsProgressNotify() {
				w.rev = max(w.rev, resp.Header.Revision)
				continue
			}
			w.apply(resp.Events)
		case <-w.timer.C:
			w.armed = false
			w.flush()
		case err := <-w.probe:
			if err != nil {
				w.outage = true
				continue
			}
			if w.outage {
				w.outage = false
				log.Info("datastore: etcd reachable again; resuming the watch", "revision", w.rev)
				return followResume
			}
		}
	}
}

// apply records a batch of events in next and arms the debounce timer.
func (w *etcdWatch) apply(events []*clientv3.Event) {
	if len(events) == 0 {
		return
	}
	if w.next == nil {
		w.next = w.cur.Clone()
	}
	for _, ev := range events {
		kv := ev.Kv
		key := string(kv.Key)
		w.rev = max(w.rev, kv.ModRevision)
		switch ev.Type {
		case mvccpb.PUT:
			if r := w.e.parse(key, kv.Value, kv.ModRevision); r != nil {
				w.next.Put(r)
			}
		case mvccpb.DELETE:
			w.e.forget(key, kv.ModRevision)
			if ref, err := w.e.refOfKey(key); err == nil {
				w.next.Remove(ref)
			}
		}
	}
	w.next.Revision = uint64(w.rev)
	now := time.Now()
	if !w.armed {
		w.armed = true
		w.burstStart = now
	}
	// Past maxDelay the timer is left to fire as set, so a steady stream
	// of changes cannot hold snapshots back for ever.
	if o := w.e.opts; now.Sub(w.burstStart) < o.maxDelay {
		w.timer.Reset(o.debounce)
	}
}

func (w *etcdWatch) flush() {
	if w.next == nil {
		return
	}
	w.cur, w.next = w.next, nil
	w.send(w.cur)
}

// send replaces any snapshot the reader has not taken yet; only this
// goroutine sends, so after draining there is room.
func (w *etcdWatch) send(s *Snapshot) {
	select {
	case w.out <- s:
	default:
		select {
		case <-w.out:
		default:
		}
		w.out <- s
	}
}

// probeLoop asks etcd for one key every etcdProbeInterval (a linearizable
// read: it needs a leader and a quorum) and hands the outcome to follow.
func (w *etcdWatch) probeLoop(ctx context.Context) {
	t := time.NewTicker(etcdProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, etcdProbeTimeout)
		_, err := w.e.cli.Get(pctx, w.e.resPrefix, clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.e.observe(ctx, err)
		// Keep the latest outcome; follow takes it when it can.
		select {
		case w.probe <- err:
		default:
			select {
			case <-w.probe:
			default:
			}
			w.probe <- err
		}
	}
}

// forget drops the memo of a key deleted at rev.
func (e *EtcdStore) forget(key string, rev int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.memo[key]; ok && m.modRev < rev {
		delete(e.memo, key)
	}
}

// retryDelay is an exponential backoff with jitter between etcdRetryMin
// and etcdRetryMax.
type retryDelay struct{ d time.Duration }

func (r *retryDelay) next() time.Duration {
	if r.d == 0 {
		r.d = etcdRetryMin
	} else {
		r.d = min(2*r.d, etcdRetryMax)
	}
	// ±20%, so that many agents do not retry in step.
	return r.d*4/5 + time.Duration(rand.Int64N(int64(r.d)*2/5+1))
}

func (r *retryDelay) reset() { r.d = 0 }

// sleepCtx waits for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
