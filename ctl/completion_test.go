package ctl

import (
	"bytes"
	"context"
	"github.com/calyxnet/calyx/tests/lab"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// commandWord is a word of a command's path in the usage text.
var commandWord = regexp.MustCompile(`^[a-z]+$`)

// usageCommands reads the commands and their flags from the usage text:
// each line of the verbs and nouns that starts two spaces in, up to the
// description. A command taking a KIND (get) ends at its first word.
func usageCommands(t *testing.T) (globals []string, cmds map[string][]string) {
	t.Helper()
	flagRE := regexp.MustCompile(`(^|[\s\[|])(--?[a-z][a-z-]*)`)
	head, body, ok := strings.Cut(usage, "\n\n")
	if !ok {
		t.Fatal("usage text: no blank line after the synopsis")
	}
	for _, m := range flagRE.FindAllStringSubmatch(head, -1) {
		globals = append(globals, m[2])
	}
	cmds = map[string][]string{}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "  ") || strings.HasPrefix(line, "   ") {
			continue
		}
		synopsis, _, _ := strings.Cut(strings.TrimSpace(line), "  ")
		var path []string
		for _, w := range strings.Fields(synopsis) {
			if !commandWord.MatchString(w) || (len(path) == 1 && path[0] == "get") {
				break
			}
			path = append(path, w)
		}
		p := strings.Join(path, " ")
		if _, seen := cmds[p]; !seen {
			cmds[p] = []string{}
		}
		for _, m := range flagRE.FindAllStringSubmatch(synopsis, -1) {
			if !slices.Contains(cmds[p], m[2]) {
				cmds[p] = append(cmds[p], m[2])
			}
		}
	}
	return globals, cmds
}

// The completion table offers exactly the commands and flags the usage
// text documents.
func TestCompletionTableMatchesUsage(t *testing.T) {
	globals, documented := usageCommands(t)
	if len(documented) < 10 {
		t.Fatalf("read only %d commands from the usage text: %v", len(documented), documented)
	}
	want := slices.DeleteFunc(slices.Clone(globalFlags), func(f string) bool { return f == "--help" })
	sort.Strings(want)
	sort.Strings(globals)
	if !slices.Equal(globals, want) {
		t.Errorf("usage's global flags %v, completion's %v", globals, want)
	}
	parents := map[string]bool{}
	table := map[string]command{}
	for _, c := range commands() {
		table[c.path] = c
		if i := strings.LastIndexByte(c.path, ' '); i >= 0 {
			if _, ok := table[c.path[:i]]; !ok {
				t.Errorf("%q comes before its parent %q in the table", c.path, c.path[:i])
			}
			parents[c.path[:i]] = true
		}
	}
	for p, flags := range documented {
		c, ok := table[p]
		if !ok {
			t.Errorf("usage documents %q, the completion table does not have it", p)
			continue
		}
		got, wantFlags := slices.Clone(c.flags), slices.Clone(flags)
		sort.Strings(got)
		sort.Strings(wantFlags)
		if !slices.Equal(got, wantFlags) {
			t.Errorf("%q: usage documents flags %v, completion offers %v", p, wantFlags, got)
		}
	}
	for p := range table {
		if _, ok := documented[p]; !ok && !parents[p] {
			t.Errorf("the completion table has %q, the usage text does not document it", p)
		}
	}
	// Every flag that is not a switch says what completes its value, and
	// nothing in the table needs quoting in the script.
	switches := []string{"--force", "--advertised", "--received", "--help"}
	all := slices.Clone(globalFlags)
	for _, c := range commands() {
		all = append(all, c.flags...)
		for _, w := range append(append([]string{c.path}, c.flags...), c.args...) {
			if strings.ContainsAny(w, "$`\\\"'") {
				t.Errorf("%q would need quoting in the script", w)
			}
		}
	}
	for _, f := range all {
		if _, ok := valueFlags[f]; !ok && !slices.Contains(switches, f) {
			t.Errorf("flag %s takes a value, but valueFlags does not say what completes it", f)
		}
	}
}

// Every command of the table is one calyxctl takes: its parent does not
// reject it as it rejects a made-up subcommand.
func TestCompletionTableMatchesDispatch(t *testing.T) {
	dir := t.TempDir()
	runArgs := func(words string) string {
		var out, errb bytes.Buffer
		args := append([]string{"--datastore", "file://" + dir, "--bpffs", filepath.Join(dir, "nopins"), "--agent", "http://127.0.0.1:1"}, strings.Fields(words)...)
		Run(context.Background(), args, IO{In: strings.NewReader(""), Out: &out, Err: &errb})
		first, _, _ := strings.Cut(errb.String(), "\n")
		return first
	}
	for _, c := range commands() {
		parent := ""
		if i := strings.LastIndexByte(c.path, ' '); i >= 0 {
			parent = c.path[:i]
		}
		rejected := runArgs(parent + " no-such-command")
		if rejected == "" {
			t.Fatalf("%q accepted a made-up subcommand", parent+" no-such-command")
		}
		if got := runArgs(c.path); got == rejected || strings.Contains(got, "unknown command") || strings.Contains(got, "unknown subcommand") {
			t.Errorf("calyxctl %s: rejected as a command: %s", c.path, got)
		}
	}
}

func TestCompletionUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"completion", "zsh"}, IO{Out: &out, Err: &errb}); code != 2 {
		t.Errorf("completion zsh: exit %d, want 2 (usage)", code)
	}
}

// The script completes in a real bash.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		lab.SkipOrFailInCI(t, "bash not found: %v", err)
	}
	var script, errb bytes.Buffer
	if code := Run(context.Background(), []string{"completion", "bash"}, IO{Out: &script, Err: &errb}); code != 0 {
		t.Fatalf("completion bash: exit %d: %s", code, errb.String())
	}
	dir := t.TempDir()
	scriptPath := filepath.Join(dir, "calyxctl.bash")
	if err := os.WriteFile(scriptPath, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line string // the command line; the cursor is at its end
		want string // COMPREPLY, sorted, space-separated
	}{
		{"calyxctl c", "completion counters ct"},
		{"calyxctl ct ", "dump flush"},
		{"calyxctl ct dump --p", "--port --proto"},
		{"calyxctl ct dump --proto ", "icmp icmpv6 tcp udp"},
		{"calyxctl -o ", "json table yaml"},
		{"calyxctl --bpffs /tmp get w", "workloadendpoint"},
		{"calyxctl get nodes ", ""},
		{"calyxctl -o json ipam al", "allocate"},
		{"calyxctl ipam allocate --", "--agent --bpffs --datastore --etcd-ca --etcd-cert --etcd-key --handle --help --node --output"},
		{"calyxctl bgp routes 192.0.2.1 --r", "--received"},
		{"calyxctl apply -f mo", "model.yaml"},
		{"calyxctl --datastore fi", "file://"},
		{"calyxctl delete ippool ", ""},
	} {
		words := strings.Fields(tc.line)
		if strings.HasSuffix(tc.line, " ") {
			words = append(words, "")
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := "source " + scriptPath + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_calyxctl\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%q: bash: %v\n%s", tc.line, err, out)
			continue
		}
		got := strings.Fields(string(out))
		sort.Strings(got)
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q completes to %q, want %q", tc.line, strings.Join(got, " "), tc.want)
		}
	}
}
