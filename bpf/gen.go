// Package bpf holds calyx's TC/XDP programs and their bpf2go bindings.
//
// The generated files (calyx_bpfel.go, calyx_bpfel.o) are committed so that
// `go build` needs no clang; `make generate` rebuilds them with the flags
// pinned below, and `make check-generate` fails when they are stale.
package bpf

//go:generate go tool bpf2go -target bpfel -cc clang -no-strip=false -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type cx_iface -type cx_route_key -type cx_route -type cx_counter_key -type cx_counter -type cx_link -type cx_node_config -type cx_fip_key -type cx_fip -type cx_ct_key -type cx_ct_entry -type cx_identity -type cx_policy_key -type cx_policy_verdict -type cx_rule_hit_key -type cx_ep_status -type cx_lease_key -type cx_lease -type cx_event_window Calyx calyx.c -- -I.
