package loader

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrLocked is wrapped by Lock's error when another process holds the pin
// directory.
var ErrLocked = errors.New("another process holds the pin directory")

// Lock takes dir's writer lock, an flock on the pin directory itself (a
// bpffs holds no other files): one agent at a time programs a dataplane,
// and `calyx-agent --cleanup` never pulls the pins from under a running
// one. It fails at once, wrapping ErrLocked, when another process holds
// it. The lock goes with the process however it ends; unlock releases it
// sooner.
func Lock(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock pin directory %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
