package model

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallelItems is how many items eachParallel gives each extra goroutine
// at least: below it one goroutine does them all.
const parallelItems = 256

// eachParallel calls fn(i) for every i in [0, n), on every CPU when n is
// large (reading and parsing a whole model: tens of thousands of
// documents). fn must be safe to call concurrently for different i.
func eachParallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/parallelItems)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		}()
	}
	wg.Wait()
}
