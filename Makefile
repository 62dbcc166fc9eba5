# calyx: `make demo` shows the dataplane at work; `make test` runs all three
# test layers. Both need root (BPF, network namespaces) and install what
# they need through `make deps`.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The agent does not link ctl: it has its own Version (calyx_build_info).
LDFLAGS   := -X github.com/calyxnet/calyx/ctl.Version=$(VERSION) -X github.com/calyxnet/calyx/agent.Version=$(VERSION)
# Debian wants a version that starts with a digit: tag v1.2.3 gives 1.2.3,
# a build past it 1.2.3+4.gHASH; with no tag, 0.0.0~git<commits>.<hash>
# (~ sorts before any release, the commit count keeps builds in order).
DEB_VERSION ?= $(shell v=$$(echo '$(VERSION)' | sed 's/^v//'); \
	if echo "$$v" | grep -Eq '^[0-9]+\.[0-9]'; then echo "$$v" | sed 's/-/+/; s/-/./g'; \
	else echo "0.0.0~git$$(git rev-list --count HEAD 2>/dev/null || echo 0).$$v" | tr - .; fi)
DEB_ARCH  ?= $(shell $(GO) env GOARCH)
PKG_DIR   := $(BIN)/pkg
APT_PKGS  := clang llvm bpftool libbpf-dev iproute2 iputils-ping iperf3 ethtool tcpdump iptables etcd-server etcd-client udhcpc isc-dhcp-client ndisc6 bird2 systemd
# command each package provides, to skip apt-get when all are present
APT_CMDS  := clang llvm-strip bpftool ip ping iperf3 ethtool tcpdump iptables etcd etcdctl udhcpc dhclient rdisc6 bird birdc systemd-analyze
E2E_TIMEOUT ?= 15m

.PHONY: all deps generate check-generate build package test test-unit test-bpf test-e2e demo bench lint clean

all: build

deps:
	@missing=""; for c in $(APT_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	[ -f /usr/include/bpf/bpf_helpers.h ] || missing="$$missing libbpf-dev"; \
	if [ -n "$$missing" ]; then \
		echo "deps: missing$$missing; installing $(APT_PKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

# Rebuild the bpf2go output (committed). Flags are pinned in bpf/gen.go.
generate:
	$(GO) generate ./bpf/

# Fails when the committed bpf2go output differs from what the sources give.
check-generate: generate
	@git diff --quiet -- bpf/ || { echo "bpf2go output is stale: run 'make generate' and commit bpf/"; git diff --stat -- bpf/; exit 1; }

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/calyx-agent ./cmd/calyxctl ./cmd/calyx-lab ./cmd/calyx-bench ./cmd/calyx-load

# The Debian package (packaging/nfpm.yaml): the binaries, the systemd unit,
# /etc/calyx/agent.yaml and calyxctl's bash completion, built by nfpm (a Go
# tool of this module) into $(PKG_DIR)/, the only .deb there.
package: build
	@mkdir -p $(PKG_DIR)
	@case '$(DEB_VERSION)' in ([0-9]*) ;; (*) echo "package: Debian version '$(DEB_VERSION)' does not start with a digit"; exit 1 ;; esac
	@rm -f $(PKG_DIR)/*.deb
	$(BIN)/calyxctl completion bash > $(PKG_DIR)/calyxctl.bash
	CALYX_DEB_VERSION='$(DEB_VERSION)' CALYX_DEB_ARCH='$(DEB_ARCH)' $(GO) tool nfpm package --config packaging/nfpm.yaml --packager deb --target $(PKG_DIR)/

# Layer 1 (pure Go) and layer 2 (BPF_PROG_TEST_RUN) live beside the code;
# layer 3 (netns lab, real agents) in tests/e2e.
test-unit:
	$(GO) test -count=1 ./model/... ./agent/... ./ctl/... ./bpfmap/... ./policy/... ./ipam/... ./conntrack/... ./flagfile/... ./cmd/...

test-bpf:
	$(GO) test -count=1 ./bpf/... ./loader/...

test-e2e:
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) ./tests/...

# The end-to-end suites run once more with every workload a VM (a tap
# joined by the lab's vnet_hdr relay to a tap in the instance's namespace)
# and once with VMs and veths alternating. E2E_FIRST_ONLY build VMs of
# their own, send no workload traffic or (TestPackage, veths whatever the
# pass) install the package: the first pass only. E2E_MIXED_ONLY
# run in the mixed pass only, where veth and tap workloads meet, which
# covers both kinds in one run (the 25-minute budget): the IPv6 suites,
# and the control-plane suites (etcd outages and sharing, BGP, IPAM),
# whose subject does not change with the workloads' kind.
E2E_KINDS ?= vm mixed
E2E_FIRST_ONLY = TestPackage|TestVM|TestDHCP|TestConntrackFloodKeepsTranslations|TestUpgradeFromPreviousRelease|TestBGPIPv6|TestCleanup
E2E_MIXED_ONLY = TestNetworkPolicyIPv6|TestMultiHostIPv6|TestAddressPlan|TestHostileIPv6|TestMetadataIPv6|TestMonitor|TestEtcdFailStatic|TestEtcdSharedDatastore|TestBGPFabric|TestBGPRouteReflectorAndMD5|TestIPAMBlockRoutes|TestIPAMEmptyBlockReleased
# `package` first: TestPackage installs the .deb it leaves in $(PKG_DIR).
test: deps build package check-generate lint
	$(GO) test -count=1 -timeout $(E2E_TIMEOUT) -skip '^($(E2E_MIXED_ONLY))' ./...
	@for k in $(E2E_KINDS); do \
		skip='$(E2E_FIRST_ONLY)'; [ "$$k" = mixed ] || skip="$$skip|$(E2E_MIXED_ONLY)"; \
		echo "e2e with $$k workloads: CALYX_LAB_WORKLOAD=$$k go test -skip '^($$skip)' ./tests/e2e/"; \
		CALYX_LAB_WORKLOAD=$$k $(GO) test -count=1 -timeout $(E2E_TIMEOUT) -skip "^($$skip)" ./tests/e2e/ || exit 1; \
	done

demo: deps build
	$(BIN)/calyx-lab demo

# Figures, not assertions: writes BENCHMARKS.md, bench/results.json and the
# charts bench/*.png (scratch output in bench/out/). About an hour;
# BENCH_QUICK=1 for a short pass that checks everything works.
# BENCH_ONLY=twohost (comma-separated: local, twohost, vm, fip, perpacket,
# controlplane, policy, etcd, bgp) for some sections; the other sections' figures are
# carried over from bench/results.json. Every lab is removed at the end,
# pass, fail or Ctrl-C.
BENCH_BPF_FLAGS = -benchtime $(if $(BENCH_QUICK),20000x -count 1,100000x -count 5)
BENCH_PERPACKET = $(if $(BENCH_ONLY),$(findstring perpacket,$(BENCH_ONLY)),perpacket)
bench: deps build
	@mkdir -p bench/out
	$(if $(BENCH_PERPACKET),@echo "per-packet: go test -bench ./bpf/ $(BENCH_BPF_FLAGS)")
	$(if $(BENCH_PERPACKET),@$(GO) test -run '^$$' -bench . $(BENCH_BPF_FLAGS) ./bpf/ > bench/out/bpf.txt 2>&1 || { cat bench/out/bpf.txt; exit 1; })
	$(BIN)/calyx-bench --bin $(BIN) $(if $(BENCH_PERPACKET),--bpf-bench bench/out/bpf.txt) --out BENCHMARKS.md --json bench/results.json --charts bench $(if $(BENCH_QUICK),--quick) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))
	@cat BENCHMARKS.md

# Fuzzing (issue 15): each target of bpf/fuzz_test.go for FUZZTIME, one
# after the other, as root (BPF_PROG_TEST_RUN). Prints per target the
# executions and the inputs it failed on: new files under
# bpf/testdata/fuzz/<target>/, which `go test ./bpf/` replays from then on
# (move them away once reported, or keep them as regression tests once the
# bug is fixed). Logs in $(BIN)/fuzz/.
FUZZTIME    ?= 2m
FUZZTARGETS ?= FuzzFromWorkload FuzzToWorkload FuzzFromUnderlay FuzzToUnderlay FuzzPrefilterXDP
.PHONY: fuzz
fuzz:
	@[ "$$(id -u)" = 0 ] || { echo "fuzz: BPF_PROG_TEST_RUN needs root"; exit 1; }
	@mkdir -p $(BIN)/fuzz; failed=""; \
	for t in $(FUZZTARGETS); do \
		dir=bpf/testdata/fuzz/$$t; log=$(BIN)/fuzz/$$t.log; \
		before=$$(ls $$dir 2>/dev/null); \
		echo "fuzz: $$t for $(FUZZTIME)"; \
		$(GO) test ./bpf/ -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -timeout 0 -v > $$log 2>&1 || failed="$$failed $$t"; \
		execs=$$(grep -o 'execs: [0-9]*' $$log | tail -1 | cut -d' ' -f2); \
		new=$$(ls $$dir 2>/dev/null | grep -vxF "$$before" | sed "s|^|$$dir/|"); \
		echo "  executions: $${execs:-none (see $$log)}"; \
		if [ -n "$$new" ]; then echo "  FOUND (go test ./bpf/ -run '^$$t\$$' replays them):"; echo "$$new" | sed 's/^/    /'; \
		elif grep -q '^--- FAIL\|^FAIL' $$log; then echo "  FAILED without a new input: see $$log"; \
		else echo "  nothing found"; fi; \
	done; \
	[ -z "$$failed" ] || { echo "fuzz: failed:$$failed"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
