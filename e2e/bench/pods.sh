#!/usr/bin/env bash
# Benchmark of pod start-up, memory and CPU: the agent in Kubelet mode against
# the real kubelet of the pinned version, side by side in one run on two nodes
# of the local cluster with identical containerds, with the floor of the bare
# CRI calls as a third column. Pod created → Running and Ready seen through a
# watch, N pods one after another and N at once; RSS and CPU time of the two
# processes with 0, N and M pods. Prints the tables and rewrites
# e2e/bench/pods-results.md.
#
#   e2e/bench/pods.sh [--pods N] [--full M] [--hold SECS] [--trace]
#       (defaults 30, 100, 20; options go to bench-pods, see e2e/src/bin/bench-pods.rs)
#
# Brings the cluster up with one kubelet node (NODECONFIG_KUBELET_NODES=1) when
# it is not up; a cluster that is up without a kubelet node is refused (take it
# down first). The agent measured is nc-node-1's (BENCH_PODS_NODE), restarted
# for the run with the release build (the cluster runs debug builds by
# default) and put back on its build afterwards; the kubelet is nc-kubelet-1's
# (BENCH_PODS_KUBELET_NODE), restarted too so that both peaks count from a
# fresh start. Binaries from $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
node="${BENCH_PODS_NODE:-nc-node-1}"
knode="${BENCH_PODS_KUBELET_NODE:-nc-kubelet-1}"
i="${node#nc-node-}"
run="${NODECONFIG_RUN:-/run/nodeconfig-e2e}"
agent_pidfile="$run/nodeconfig/agent-$node.pid"
kubelet_pidfile="$run/nodes/$knode/kubelet.pid"
target="${CARGO_TARGET_DIR:-target}"
say() { echo "bench-pods: $*" >&2; }
kubectl() { e2e/cluster kubectl "$@"; }

if ! kill -0 "$(cat "$agent_pidfile" 2>/dev/null)" 2>/dev/null || ! kubectl get node "$node" >/dev/null 2>&1; then
  NODECONFIG_KUBELET_NODES="${NODECONFIG_KUBELET_NODES:-1}" e2e/cluster up >&2
fi
if ! kubectl get node "$knode" >/dev/null 2>&1 || [ ! -e "/var/run/netns/$knode" ]; then
  say "the cluster has no kubelet node $knode: take it down and bring it up with NODECONFIG_KUBELET_NODES=1"
  exit 1
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

restart_kubelet() {
  e2e/cluster kubelet stop "$knode"
  e2e/cluster kubelet start "$knode"
  for _ in $(seq 1 120); do
    if nsenter --net="/var/run/netns/$knode" -- curl -fsS --max-time 1 http://127.0.0.1:10248/healthz >/dev/null 2>&1 &&
       [ "$(kubectl get node "$knode" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; then
      return 0
    fi
    sleep 0.5
  done
  say "kubelet of $knode not healthy after 60s"; return 1
}

restore() {
  set +e
  if [ "$profile_before" != release ]; then
    restart_agent "$profile_before" && say "agent of $node back on its $profile_before build"
  fi
}
trap restore EXIT
trap "exit 143" TERM INT

# Always a fresh release agent and a fresh kubelet: their peak RSS then counts from their start.
restart_agent release
restart_kubelet
say "both restarted; 10 s for them to settle"
sleep 10

# The settings of each that bear on the figures, as they run.
agent_max_pods="$(kubectl get nodeconfig "$node" -o jsonpath='{.spec.pods.maxPods}' 2>/dev/null || true)"
configz="$(kubectl get --raw "/api/v1/nodes/$knode/proxy/configz" 2>/dev/null |
  jq -c '.kubeletconfig | {maxPods, syncFrequency, serializeImagePulls, maxParallelImagePulls, kubeAPIQPS, kubeAPIBurst, eventRecordQPS, registryPullQPS, nodeStatusUpdateFrequency, fileCheckFrequency, cpuManagerPolicy, memoryManagerPolicy, topologyManagerPolicy, cgroupDriver, featureGates}' 2>/dev/null || true)"
allocatable() { kubectl get node "$1" -o jsonpath='{.status.allocatable.pods}' 2>/dev/null || echo '?'; }
alloc_agent="$(allocatable "$node")"; alloc_kubelet="$(allocatable "$knode")"

table="$(mktemp)"
rc=0
"$target/release/bench-pods" --node "$node" --kubelet-node "$knode" --table "$table" "$@" || rc=$?
if [ "$rc" != 0 ] || [ ! -s "$table" ]; then
  rm -f "$table"; say "the run failed (exit $rc); e2e/bench/pods-results.md left as it was"
  [ "$rc" != 0 ] || rc=1
  exit "$rc"
fi

{
  echo "# Pod start-up, memory and CPU: the agent in Kubelet mode vs the real kubelet"
  echo
  echo "Written by \`e2e/bench/pods.sh${*:+ $*}\` on $(date -u +%Y-%m-%d\ %H:%M\ UTC), in one locked"
  echo "cluster session (\`e2e/cluster down\`; \`NODECONFIG_KUBELET_NODES=1 e2e/cluster up\`; this; \`e2e/cluster down\`)."
  echo "containerd $(containerd --version 2>/dev/null | awk '{print $3}'), one per node, the same configuration and images on both;"
  echo "the agent (release build) runs $node, kubelet $(kubectl get node "$knode" -o jsonpath="{.status.nodeInfo.kubeletVersion}" 2>/dev/null || echo "?") runs $knode."
  echo
  cat "$table"
  echo
  echo "How it is measured:"
  echo
  echo "- *start-up*: from sending the Pod's create request until a watch on the namespace shows it"
  echo "  with phase Running and condition Ready=True. The Pod, the same for both: busybox \`sleep 3600\`,"
  echo "  no probes, \`terminationGracePeriodSeconds: 1\`, the default ServiceAccount token volume, a"
  echo "  toleration of $knode's taint \`nodeconfig.dev/kubelet-node:NoSchedule\`, and \`spec.nodeName\`"
  echo "  set so the scheduler is out of the measure. p50/p99: nearest rank; with 30 samples p99 is"
  echo "  the slowest one. Ratio: agent / kubelet."
  echo "- *one after another*: each created once the previous one is ready; a floor pod, then an agent"
  echo "  Pod and a kubelet Pod, the two taking turns at going first, so the load of a shared machine"
  echo "  falls on all alike. *At once*: all created concurrently, each timed from its own create; the"
  echo "  floor's batch (removed again), 3 s, the agent's, 3 s, the kubelet's. The 30 of one after"
  echo "  another are deleted before; the ones at once stay, and the rest up to the largest size are"
  echo "  added at once, the kubelet's batch first this time, then the agent's."
  echo "- *floor*: a bare CRI client on $node's containerd makes RunPodSandbox, CreateContainer,"
  echo "  StartContainer with the configs the agent's own builders make for the same Pod (no env, no"
  echo "  mounts); timed until StartContainer returns. No API server round trips, status write or watch."
  echo "- *RSS*: VmRSS of each process at the end of the phase; the peak is VmHWM, reset"
  echo "  (clear_refs 5) at the end of the idle 0-pod phase, read at the end of the idle phase at the"
  echo "  largest size. *CPU*: utime+stime from /proc/PID/stat, the difference over the phase. The"
  echo "  agent process also runs its service proxy and node loops; the kubelet process has cAdvisor,"
  echo "  its PLEG and its status manager, and no proxy (the cluster runs no kube-proxy on $knode)."
  echo "  Both processes were restarted just before the run, then left 10 s to settle."
  echo "- Deletion waits until the Pods are gone from the API server and no sandbox of theirs is"
  echo "  ready on either node (the kubelet removes stopped sandboxes at its container GC, each minute)."
  echo
  echo "Settings:"
  echo
  echo "- The kubelet runs with its defaults except what the local cluster needs"
  echo "  (e2e/scripts/lib/kubelet.sh: cgroupfs driver and its own cgroup root, its own root and"
  echo "  pod-log dirs, webhook authn/authz, cluster DNS, no image GC and disk-only eviction"
  echo "  thresholds lowered for the shared disk). Defaults that bear on start-up: the generic PLEG"
  echo "  relists every 1 s (fixed in the kubelet); EventedPLEG off (alpha, off by default in"
  echo "  v1.37.2); serializeImagePulls true (no pull happens here: IfNotPresent and the image is"
  echo "  present); kubeAPIQPS 50 / kubeAPIBurst 100; syncFrequency 1m; nodeStatusUpdateFrequency 10s;"
  echo "  maxPods 110; no CPU, memory or topology manager policy."
  echo "- As read from the kubelet's /configz during the run: ${configz:-not reachable}"
  echo "- The agent: NodeConfig spec.pods.maxPods ${agent_max_pods:-?}; allocatable pods: $node $alloc_agent, $knode $alloc_kubelet;"
  echo "  both nodes' pod CIDRs are /24."
  echo "- The API server, etcd, the controller-manager, the scheduler, two operator replicas and"
  echo "  the other agent node (debug build) share the same 2 cores, and so did other developers'"
  echo "  compilations (the load averages above): absolute figures are this machine's; the ratios"
  echo "  are what the run is for."
} > e2e/bench/pods-results.md
rm -f "$table"
say "wrote e2e/bench/pods-results.md"
