package flagfile

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testFlags is a small flag set of the kinds calyx-agent has, with
// --config defaulting to path.
type testFlags struct {
	fs       *flag.FlagSet
	name     *string
	metrics  *string
	interval *time.Duration
	withdraw *bool
}

func newTestFlags(path string) *testFlags {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("config", path, "config file")
	return &testFlags{
		fs:       fs,
		name:     fs.String("node", "host", "node name"),
		metrics:  fs.String("metrics", "127.0.0.1:9091", "metrics address"),
		interval: fs.Duration("resync-interval", time.Minute, "resync"),
		withdraw: fs.Bool("bgp-withdraw-on-stop", false, "withdraw"),
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileSetsFlags(t *testing.T) {
	p := writeFile(t, `# comment
node: host-a
resync-interval: 30s
bgp-withdraw-on-stop: true
metrics: ""
`)
	f := newTestFlags(p)
	if err := Parse(f.fs, nil, "config"); err != nil {
		t.Fatal(err)
	}
	if *f.name != "host-a" || *f.interval != 30*time.Second || !*f.withdraw || *f.metrics != "" {
		t.Errorf("got node %q resync %s withdraw %v metrics %q", *f.name, *f.interval, *f.withdraw, *f.metrics)
	}
}

func TestCommandLineOverridesFile(t *testing.T) {
	p := writeFile(t, "node: from-file\nresync-interval: 30s\n")
	f := newTestFlags(p)
	if err := Parse(f.fs, []string{"--node", "from-flag"}, "config"); err != nil {
		t.Fatal(err)
	}
	if *f.name != "from-flag" {
		t.Errorf("node = %q, want the command line's from-flag", *f.name)
	}
	if *f.interval != 30*time.Second {
		t.Errorf("resync-interval = %s, want the file's 30s", *f.interval)
	}
}

func TestNullKeepsDefault(t *testing.T) {
	p := writeFile(t, "node:\nmetrics: ~\nresync-interval:\n")
	f := newTestFlags(p)
	if err := Parse(f.fs, nil, "config"); err != nil {
		t.Fatal(err)
	}
	if *f.name != "host" || *f.metrics != "127.0.0.1:9091" || *f.interval != time.Minute {
		t.Errorf("defaults changed: node %q metrics %q resync %s", *f.name, *f.metrics, *f.interval)
	}
}

func TestMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	// Left at its default, a missing file is no error.
	f := newTestFlags(missing)
	if err := Parse(f.fs, []string{"--node", "x"}, "config"); err != nil {
		t.Errorf("missing default file: %v", err)
	}
	if *f.name != "x" {
		t.Errorf("node = %q", *f.name)
	}
	// Asked for, it is.
	f = newTestFlags("/nonexistent/default.yaml")
	err := Parse(f.fs, []string{"--config", missing}, "config")
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing --config file: got %v, want an error naming %s", err, missing)
	}
	// An empty --config reads no file.
	f = newTestFlags("/nonexistent/default.yaml")
	if err := Parse(f.fs, []string{"--config", ""}, "config"); err != nil {
		t.Errorf("--config '': %v", err)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, content := range []string{"", "# only comments\n", "---\n"} {
		f := newTestFlags(writeFile(t, content))
		if err := Parse(f.fs, nil, "config"); err != nil {
			t.Errorf("%q: %v", content, err)
		}
	}
}

func TestBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		want          []string // substrings of the error besides the path
	}{
		{"unknown key", "node: a\nresync: 1m\n", []string{`unknown key "resync"`, "line 2"}},
		{"config key", "config: /etc/other.yaml\n", []string{`key "config": --config is given on the command line only`}},
		{"bad duration", "resync-interval: soon\n", []string{`key "resync-interval"`, `"soon"`}},
		{"bad bool", "bgp-withdraw-on-stop: maybe\n", []string{`key "bgp-withdraw-on-stop"`}},
		{"list value", "node: [a, b]\n", []string{`key "node"`, "single value"}},
		{"map value", "node: {a: b}\n", []string{`key "node"`, "single value"}},
		{"twice", "node: a\nnode: b\n", []string{`key "node" given twice`}},
		{"not a mapping", "- node\n", []string{"mapping"}},
		{"two documents", "node: a\n---\nnode: b\n", []string{"one YAML document"}},
		{"not yaml", "node: [\n", []string{"config file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.content)
			f := newTestFlags(p)
			err := Parse(f.fs, nil, "config")
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.content)
			}
			for _, w := range append(tc.want, p) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A bad value in the file is an error even when the command line sets the
// same flag: the file is wrong either way.
func TestBadValueOverriddenStillFails(t *testing.T) {
	f := newTestFlags(writeFile(t, "resync-interval: soon\n"))
	if err := Parse(f.fs, []string{"--resync-interval", "5s"}, "config"); err == nil {
		t.Error("a bad value in the file was accepted because the command line overrides it")
	}
}

func TestBadCommandLine(t *testing.T) {
	f := newTestFlags(writeFile(t, "node: a\n"))
	if err := Parse(f.fs, []string{"--nope"}, "config"); err == nil {
		t.Error("unknown command-line flag accepted")
	}
}

func TestNoConfigFlag(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	if err := Parse(fs, nil, "config"); err == nil {
		t.Error("Parse without the config flag defined succeeded")
	}
}

func TestKeys(t *testing.T) {
	got, err := Keys([]byte("# c\nnode:\nmetrics: x\n# resync-interval: 1m\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"node", "metrics"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys = %v, want %v", got, want)
	}
}

// A command-line-only flag (a one-shot action) is refused in the file, and
// works on the command line.
func TestCommandLineOnly(t *testing.T) {
	newFlags := func(path string) (*flag.FlagSet, *bool) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.String("config", path, "")
		return fs, fs.Bool("cleanup", false, "")
	}
	p := writeFile(t, "cleanup: true\n")
	fs, _ := newFlags(p)
	if err := Parse(fs, nil, "config", "cleanup"); err == nil || !strings.Contains(err.Error(), `key "cleanup": --cleanup is given on the command line only`) {
		t.Errorf("cleanup in the file: %v, want it refused", err)
	}
	fs, cleanup := newFlags(writeFile(t, ""))
	if err := Parse(fs, []string{"--cleanup"}, "config", "cleanup"); err != nil || !*cleanup {
		t.Errorf("--cleanup on the command line: %v, set %v", err, *cleanup)
	}
}
