package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/agent/calc"
)

// A JSON line of an endpoint's interface carries both as fields: the
// detach's, named from what the last reconcile attached.
func TestJSONLogFields(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	m.ifaces.set(map[uint32]calc.Attachment{7: {Ifname: "tap0123abcd-ef", Ifindex: 7, Endpoint: "vm-1"}})
	ei, _ := m.ifaces.get(7)
	log.Info("detached", "interface", ei.ifname, "ifindex", 7, "endpoint", ei.endpoint)
	log.Debug("not at info")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%q: %v (one JSON object expected)", buf.String(), err)
	}
	if line["msg"] != "detached" || line["interface"] != "tap0123abcd-ef" || line["endpoint"] != "vm-1" || line["level"] != "INFO" {
		t.Errorf("JSON line %v", line)
	}
}

func TestLogFormats(t *testing.T) {
	for _, f := range LogFormats {
		var buf bytes.Buffer
		log, err := NewLogger(&buf, f, slog.LevelInfo)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		log.Info("synced", "endpoint", "vm-1")
		if f == "text" && !strings.Contains(buf.String(), "endpoint=vm-1") {
			t.Errorf("text line %q", buf.String())
		}
	}
	if _, err := NewLogger(&bytes.Buffer{}, "logfmt", slog.LevelInfo); err == nil || !strings.Contains(err.Error(), "text or json") {
		t.Errorf("an unknown format: %v, want an error naming the formats", err)
	}
}
