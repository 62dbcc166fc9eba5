package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/calyxnet/calyx/flagfile"
)

// shippedConfig is the config file the Debian package installs as
// /etc/calyx/agent.yaml.
const shippedConfig = "../../packaging/agent.yaml"

func testFlagSet() (*flag.FlagSet, *options) {
	fs := flag.NewFlagSet("calyx-agent", flag.ContinueOnError)
	return fs, defineFlags(fs)
}

// Every flag is a key of the shipped config file, so that an operator finds
// each setting there: a new flag without a key fails here.
func TestShippedConfigHasEveryFlag(t *testing.T) {
	data, err := os.ReadFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := flagfile.Keys(data)
	if err != nil {
		t.Fatalf("%s: %v", shippedConfig, err)
	}
	fs, _ := testFlagSet()
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && !slices.Contains(commandLineOnly, f.Name) && !slices.Contains(keys, f.Name) {
			t.Errorf("%s has no key %q for the flag --%s", shippedConfig, f.Name, f.Name)
		}
	})
}

// The shipped file loads as it is, and leaves every flag at its default.
func TestShippedConfigLoads(t *testing.T) {
	fs, o := testFlagSet()
	defaults := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { defaults[f.Name] = f.Value.String() })
	if err := flagfile.Parse(fs, []string{"--config", shippedConfig}, "config"); err != nil {
		t.Fatal(err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && f.Value.String() != defaults[f.Name] {
			t.Errorf("the shipped file sets --%s to %q, not its default %q", f.Name, f.Value.String(), defaults[f.Name])
		}
	})
	if *o.config != shippedConfig {
		t.Errorf("--config = %q", *o.config)
	}
}

// A config file sets what the command line does not; the command line wins.
func TestConfigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte("attach: clsact\nlog-level: debug\nresync-interval: 5s\nnode: from-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, o := testFlagSet()
	if err := flagfile.Parse(fs, []string{"--config", p, "--node", "from-flag"}, "config"); err != nil {
		t.Fatal(err)
	}
	if *o.attach != "clsact" || o.logLevel.String() != "DEBUG" || o.resync.Seconds() != 5 || *o.node != "from-flag" {
		t.Errorf("attach %q log-level %s resync %s node %q", *o.attach, o.logLevel, o.resync, *o.node)
	}
}

// A value the agent would refuse is refused while the file is read, naming
// the key and the file.
func TestConfigFileBadValues(t *testing.T) {
	for _, line := range []string{"attach: tc", "xdp: generic", "log-level: loud", "resync-interval: -1s", "dead-node-grace: -5m", "node-ttl: 10ms", "empty-block-grace: soon", "bgp-withdraw-on-stop: perhaps"} {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fs, _ := testFlagSet()
		err := flagfile.Parse(fs, []string{"--config", p}, "config")
		key, _, _ := strings.Cut(line, ":")
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `"`+key+`"`) {
			t.Errorf("%q: got %v, want an error naming %q and %s", line, err, key, p)
		}
	}
}

// --help lists every flag.
func TestHelpListsEveryFlag(t *testing.T) {
	fs, _ := testFlagSet()
	var out bytes.Buffer
	fs.SetOutput(&out)
	if err := fs.Parse([]string{"--help"}); err != flag.ErrHelp {
		t.Fatalf("--help: %v", err)
	}
	help := out.String()
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(help, "  -"+f.Name+" ") && !strings.Contains(help, "  -"+f.Name+"\n") {
			t.Errorf("--help does not list --%s:\n%s", f.Name, help)
		}
	})
	if n < 18 {
		t.Errorf("only %d flags defined", n)
	}
}
