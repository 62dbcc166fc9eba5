package bpf_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every header and every hook's file compiles on its own: each includes
// what it uses, so a reader can open any one and follow it, and none
// leans on what an includer happened to include before it.
func TestSourcesSelfContained(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		// clang builds the programs (make generate): no clang, no calyx.
		t.Fatalf("clang not found: %v", err)
	}
	files, err := filepath.Glob("*.h")
	if err != nil {
		t.Fatal(err)
	}
	hooks, _ := filepath.Glob("*.c")
	for _, f := range append(files, hooks...) {
		if f == "calyx.c" {
			continue // the object: it includes the hooks
		}
		t.Run(f, func(t *testing.T) {
			cmd := exec.Command(clang, "-target", "bpf", "-O2", "-Wall", "-Werror", "-fsyntax-only",
				"-I.", "-I/usr/include/x86_64-linux-gnu", "-x", "c", "-")
			cmd.Stdin = strings.NewReader("#include \"" + f + "\"\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s alone does not compile: %v\n%s", f, err, out)
			}
		})
	}
}
