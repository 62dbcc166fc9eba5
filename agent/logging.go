package agent

import (
	"fmt"
	"io"
	"log/slog"
)

// LogFormats are the formats NewLogger writes: "text" (logfmt-like
// key=value lines, for a terminal or journald) and "json" (one object a
// line, for a log shipper).
var LogFormats = []string{"text", "json"}

// NewLogger returns a logger that writes lines of format (one of
// LogFormats) to w, at level and above. The agent's lines name a local
// endpoint's interface and endpoint with the attributes "interface" and
// "endpoint", so that a log shipper can index them.
func NewLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q: want text or json", format)
}
