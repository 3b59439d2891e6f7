#!/usr/bin/env bash
# Runs every test: the hygiene gate (rustfmt, clippy with warnings denied, no
# import cycle between source files), the unit tests, then the end-to-end tests on the local
# cluster of real components (brought up here, and torn down after unless it
# was already up before).
#
#   e2e/test.sh [extra args for the e2e cargo test, e.g. a test name]
#
# Last, the CI subset of the upstream conformance suite (e2e/conformance --ci,
# the tests listed in e2e/conformance-ci.txt) on the same cluster; its counts
# go into the total. NODECONFIG_CONFORMANCE=0 leaves it out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
e2e/scripts/install-deps.sh   # protoc for the CRI crate, the cluster's packages

# Every cargo test's output also goes here, for the total printed at the end.
results="$(mktemp)"
summary() {
  awk '/^test result:/ {p += $4; f += $6; s += $8}
       /^conformance: [0-9]+ passed/ {p += $2; f += $4; s += $6}
       END {printf "total: %d passed, %d failed, %d skipped\n", p, f, s}' "$results"
}

trap summary EXIT

echo "== hygiene (format, clippy, import cycles)"
command -v cargo-clippy >/dev/null && command -v rustfmt >/dev/null \
  || { echo "test.sh: clippy and rustfmt are needed (rustup component add clippy rustfmt)" >&2; exit 1; }
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
python3 e2e/scripts/check-module-cycles.py node-agent/src operator/src crds/src e2e/src

echo "== unit tests"
cargo test --workspace --exclude nodeconfig-e2e --locked 2>&1 | tee -a "$results"

echo "== local cluster"
was_up=0
if e2e/cluster kubectl get --raw /readyz >/dev/null 2>&1; then was_up=1; fi
finish() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "== e2e failed (exit $rc); last lines of the cluster's logs:" >&2
    for f in /var/lib/nodeconfig-e2e/logs/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2; tail -n 15 "$f" >&2
    done
  fi
  if [ "$was_up" = 0 ] && [ "${NODECONFIG_KEEP_CLUSTER:-0}" != 1 ]; then
    e2e/cluster down || true
  fi
  summary
  exit "$rc"
}
trap finish EXIT
# Two nodes run by the real kubelet, where the Companion agent runs
# (companion.rs, agent_identity.rs's kubelet-mounted token, and
# companion_rollout.rs, where the second shows that a stalled rollout took down
# no more agents than the DaemonSet's maxUnavailable); tainted, they take no
# other test's pod (pods.rs's topology spread honours the taint). They add
# about 8 s to the cluster's start; NODECONFIG_KUBELET_NODES=1 brings one,
# 0 none.
export NODECONFIG_KUBELET_NODES="${NODECONFIG_KUBELET_NODES:-2}"
e2e/cluster up

echo "== end-to-end tests"
cargo test -p nodeconfig-e2e --locked --no-fail-fast -- --test-threads=2 "$@" 2>&1 | tee -a "$results"

if [ "${NODECONFIG_CONFORMANCE:-1}" != 0 ] && [ $# -eq 0 ]; then
  echo "== upstream conformance (CI subset, e2e/conformance --ci)"
  e2e/conformance --ci 2>&1 | tee -a "$results"
fi
