#!/usr/bin/env bash
# Benchmark of pod start-up in Kubelet mode on the local cluster: Pod created →
# Running and Ready seen through a watch, N pods one after another and N at
# once, against the floor of the same CRI calls made by a bare client in the
# same run; and the agent's RSS with 0 and N pods. Prints a table and rewrites
# e2e/bench/pods-results.md.
#
#   e2e/bench/pods.sh [--pods N] [--trace]   (default 30; options go to bench-pods)
#
# Brings the cluster up when it is not. The agent measured is nc-node-1's
# (BENCH_PODS_NODE), restarted for the run with the release build (the cluster
# runs debug builds by default) and put back on its build afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
node="${BENCH_PODS_NODE:-nc-node-1}"
i="${node#nc-node-}"
run="${NODECONFIG_RUN:-/run/nodeconfig-e2e}"
agent_pidfile="$run/nodeconfig/agent-$node.pid"
say() { echo "bench-pods: $*" >&2; }

if ! kill -0 "$(cat "$agent_pidfile" 2>/dev/null)" 2>/dev/null || ! e2e/cluster kubectl get node "$node" >/dev/null 2>&1; then
  e2e/cluster up >&2
fi
cargo build --release --locked -q -p node-agent -p nodeconfig-e2e --bin node-agent --bin bench-pods

# The profile the agent runs now, to put it back.
agent_exe="$(readlink "/proc/$(cat "$agent_pidfile")/exe" 2>/dev/null || true)"
case "$agent_exe" in */release/*) profile_before=release ;; *) profile_before=debug ;; esac

restart_agent() {
  e2e/cluster agent stop "$node"
  NODECONFIG_PROFILE="$1" e2e/cluster agent start "$node"
  for _ in $(seq 1 120); do
    curl -fsS --max-time 1 "http://10.200.$i.2:10356/readyz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  say "agent of $node ($1) not ready after 60s"; return 1
}

restore() {
  set +e
  if [ "$profile_before" != release ]; then
    restart_agent "$profile_before" && say "agent of $node back on its $profile_before build"
  fi
}
trap restore EXIT
trap "exit 143" TERM INT

# Always a fresh release agent: its peak RSS then counts from its start.
restart_agent release

table="$(mktemp)"
rc=0
target/release/bench-pods --node "$node" --table "$table" "$@" || rc=$?
if [ "$rc" != 0 ] || [ ! -s "$table" ]; then
  rm -f "$table"; say "the run failed (exit $rc); e2e/bench/pods-results.md left as it was"
  [ "$rc" != 0 ] || rc=1
  exit "$rc"
fi

{
  echo "# Pod start-up benchmark: the agent in Kubelet mode vs the bare CRI floor"
  echo
  echo "Written by \`e2e/bench/pods.sh${*:+ $*}\` on $(date -u +%Y-%m-%d\ %H:%M\ UTC)."
  echo "containerd $(containerd --version 2>/dev/null | awk '{print $3}'), one per node; the agent (release build) of $node."
  echo
  cat "$table"
  echo
  echo "- *agent*: from sending the Pod's create request until a watch on the namespace shows it"
  echo "  with phase Running and condition Ready=True. The Pod: busybox \`sleep 3600\`, no probes,"
  echo "  \`terminationGracePeriodSeconds: 1\`, the default ServiceAccount token volume, and"
  echo "  \`spec.nodeName\` set so the scheduler is out of the measure (as it is out of the floor)."
  echo "  *One after another*: each created once the previous one is ready; *all at once*: all"
  echo "  created concurrently, each timed from its own create. The Pods are deleted (and their"
  echo "  sandboxes gone) between the two."
  echo "- One after another, a floor pod and an agent Pod take turns (so the load of a shared"
  echo "  machine falls on both alike); at once, the floor's batch runs just before the agent's."
  echo "- *floor*: a bare CRI client on the node's containerd socket, in the same run, makes"
  echo "  RunPodSandbox, CreateContainer, StartContainer with the configs the agent's own builders"
  echo "  make for the same Pod (no env, no mounts, bench labels); timed from the first call until"
  echo "  StartContainer returns. It has no API server round trips, no status write and no watch."
  echo "- p50/p99: nearest rank; with 30 samples p99 is the slowest one. Ratio: agent / floor."
  echo "- RSS: VmRSS of the agent process; the peak is VmHWM, reset (clear_refs 5) after the"
  echo "  0-pod reading. The agent also runs its service proxy and node loops."
  echo "- The API server, etcd, the controller-manager, the scheduler, two operator replicas and"
  echo "  the other node's agent (debug build) share the same cores, so absolute figures are this"
  echo "  machine's."
} > e2e/bench/pods-results.md
rm -f "$table"
say "wrote e2e/bench/pods-results.md"
