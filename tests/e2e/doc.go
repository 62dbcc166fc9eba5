// Package e2e holds calyx's end-to-end tests: each test builds its own
// network-namespace lab (tests/lab), runs the real calyx-agent in a host
// namespace, drives it with the real calyxctl and checks real traffic.
//
// They need root, iproute2, ping and the binaries from "make build"
// (bin/calyx-agent, bin/calyxctl; CALYX_BIN_DIR overrides the directory).
// Without them the tests skip, except when CI is set, where they fail.
package e2e
