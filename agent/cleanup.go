package agent

import (
	"errors"
	"fmt"
	"os"

	"github.com/calyxnet/calyx/agent/kernel"
	"github.com/calyxnet/calyx/agent/undo"
	"github.com/calyxnet/calyx/loader"
)

// CleanupReport says what Cleanup removed and put back.
type CleanupReport struct {
	loader.Detached
	Routes, Neighbours, Pins int
	// Restored are the host settings put back as they were before the
	// agent changed them; Gone those whose interface no longer exists.
	Restored, Gone []undo.Change
}

// String is the report as calyx-agent --cleanup prints it.
func (r CleanupReport) String() string {
	s := fmt.Sprintf("detached %d links, %d clsact filters (%d qdiscs); removed %d routes, %d neighbour entries, %d pins; restored %d settings",
		r.Links, r.Filters, r.Qdiscs, r.Routes, r.Neighbours, r.Pins, len(r.Restored))
	for _, c := range r.Restored {
		s += fmt.Sprintf("\n  %s = %q", c.Setting, c.Original)
	}
	if len(r.Gone) > 0 {
		s += fmt.Sprintf("\n  (%d settings of interfaces that are gone)", len(r.Gone))
	}
	return s
}

// Cleanup removes everything an agent made on this host, for decommissioning
// it (calyx-agent --cleanup): every calyx program and link, the calyx routes
// (every table, both families) and gateway neighbour entries, the sysctls
// it changed put back as the undo ledger recorded them, and every pin under
// dir with dir itself. It runs in the caller's network namespace. It
// refuses, wrapping loader.ErrLocked, while an agent runs on dir: stop the
// agent first (with --bgp-withdraw-on-stop, so its peers drop its routes at
// once; the BGP sessions end with it). It carries on past a failure, except
// that the pins (the ledger among them) stay when a setting could not be
// put back, so that a second run can; it returns every error.
func Cleanup(dir string) (CleanupReport, error) {
	var r CleanupReport
	var errs []error
	if _, err := os.Stat(dir); err == nil {
		unlock, err := loader.Lock(dir)
		if err != nil {
			return r, fmt.Errorf("cleanup: %w: stop the agent first", err)
		}
		defer unlock()
	}
	ledger, err := undo.OpenExisting(dir)
	if err != nil {
		return r, fmt.Errorf("cleanup: %w", err)
	}
	if ledger != nil {
		defer ledger.Close()
	}
	if r.Detached, err = loader.DetachAll(dir); err != nil {
		errs = append(errs, err)
	}
	if r.Routes, err = kernel.RemoveOwnRoutes(); err != nil {
		errs = append(errs, err)
	}
	if r.Neighbours, err = kernel.RemoveGatewayNeighbours(); err != nil {
		errs = append(errs, err)
	}
	restored := true
	if ledger != nil {
		changes, err := ledger.Changes()
		if err != nil {
			return r, errors.Join(append(errs, err)...)
		}
		for _, c := range changes {
			err := os.WriteFile(c.Setting, []byte(c.Original), 0o644)
			switch {
			case err == nil:
				r.Restored = append(r.Restored, c)
			case errors.Is(err, os.ErrNotExist):
				r.Gone = append(r.Gone, c) // its interface went, and the setting with it
			default:
				restored = false
				errs = append(errs, fmt.Errorf("put back %s = %q: %w", c.Setting, c.Original, err))
			}
		}
	}
	if restored {
		if r.Pins, err = loader.RemovePins(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return r, errors.Join(errs...)
}
