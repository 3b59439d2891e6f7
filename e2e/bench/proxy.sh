#!/usr/bin/env bash
# Benchmark of the agent's service proxy against kube-proxy (iptables mode, the
# pinned version), side by side on the local cluster (`e2e/cluster up` first):
# same API server, same iptables backend (the host's). Prints a table and
# rewrites e2e/bench/proxy-results.md.
#
#   e2e/bench/proxy.sh [SIZES...]        (default: 1000 5000 10000)
#
# The agent measured is nc-node-1's, restarted for the run with the release
# build (the cluster runs debug builds by default) and put back afterwards.
# kube-proxy runs in a third node, nc-node-3 (brought up when missing), in place
# of that node's agent; afterwards kube-proxy is stopped, its rules removed and
# nc-node-3's agent started again (the node stays). BENCH_PROXY_CHANGES (50)
# is the number of single-Service changes timed per size. After the changes,
# each proxy in turn is stopped, its rules removed, and started again with all
# the Services in place (the cold-start rows); bench-proxy does that through
# `proxy.sh --restart stop|start agent|kube-proxy` (not for use by hand).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$PWD"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 5000 10000)
changes="${BENCH_PROXY_CHANGES:-50}"
state="${NODECONFIG_STATE:-/var/lib/nodeconfig-e2e}"
run="${NODECONFIG_RUN:-/run/nodeconfig-e2e}"
source e2e/scripts/versions.env
kp="${NODECONFIG_CACHE:-/var/cache/nodeconfig}/k8s-$K8S_VERSION/bin/kube-proxy"
kp_pidfile="$run/bench-kube-proxy.pid"
kp_log="$state/logs/kube-proxy.log"
agent_pidfile="$run/nodeconfig/agent-nc-node-1.pid"
say() { echo "bench-proxy: $*" >&2; }

stop_kube_proxy() {
  if [ -f "$kp_pidfile" ]; then
    kill -TERM "$(cat "$kp_pidfile")" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$(cat "$kp_pidfile")" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$(cat "$kp_pidfile")" 2>/dev/null
    rm -f "$kp_pidfile"
  fi
  nsenter --net=/var/run/netns/nc-node-3 -- "$kp" --cleanup >>"$kp_log" 2>&1
  # --cleanup keeps KUBE-FIREWALL (kubelet's too) and route_localnet; neither was there before.
  nsenter --net=/var/run/netns/nc-node-3 -- sh -c 'for c in INPUT OUTPUT; do while iptables -w 5 -D $c -j KUBE-FIREWALL 2>/dev/null; do :; done; done
    iptables -w 5 -F KUBE-FIREWALL 2>/dev/null; iptables -w 5 -X KUBE-FIREWALL 2>/dev/null
    sysctl -qw net.ipv4.conf.all.route_localnet=0'
}

start_kube_proxy() {
  mkdir -p "$(dirname "$kp_log")"
  echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) bench-proxy starts kube-proxy in nc-node-3" >>"$kp_log"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$kp_pidfile" \
    nsenter --net=/var/run/netns/nc-node-3 -- "$kp" \
    --kubeconfig "$state/admin.kubeconfig" --proxy-mode=iptables --hostname-override=nc-node-3 \
    --cluster-cidr=10.244.0.0/16 --metrics-bind-address=10.200.3.2:10249 --healthz-bind-address=10.200.3.2:10256 \
    --iptables-sync-period=30s --iptables-min-sync-period=1s --conntrack-max-per-core=0 \
    --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    </dev/null >>"$kp_log" 2>&1 9>&- &
  for _ in $(seq 1 50); do [ -s "$kp_pidfile" ] && break; sleep 0.02; done
}

# The cold-start hook (bench-proxy calls it; prints the new pid on start).
if [ "${1:-}" = --restart ]; then
  case "${2:-} ${3:-}" in
    "stop agent")
      e2e/cluster agent stop nc-node-1 >&2
      nsenter --net=/var/run/netns/nc-node-1 -- target/release/node-agent cleanup >/dev/null ;;
    "start agent")
      NODECONFIG_PROFILE=release e2e/cluster agent start nc-node-1 >&2
      cat "$agent_pidfile" ;;
    "stop kube-proxy") set +e; stop_kube_proxy ;;
    "start kube-proxy") start_kube_proxy; cat "$kp_pidfile" ;;
    *) say "usage: proxy.sh --restart stop|start agent|kube-proxy"; exit 2 ;;
  esac
  exit 0
fi

e2e/scripts/build-control-plane.sh kube-proxy
cargo build --release --locked -q -p node-agent -p nodeconfig-e2e --bin node-agent --bin bench-proxy

# A third node for kube-proxy.
if [ ! -e /var/run/netns/nc-node-3 ] || ! e2e/cluster kubectl get node nc-node-3 >/dev/null 2>&1; then
  NODECONFIG_NODES=3 e2e/cluster up >&2
fi

# The profile nc-node-1's agent runs now, to put it back.
agent_exe="$(readlink "/proc/$(cat "$agent_pidfile")/exe" 2>/dev/null || true)"
case "$agent_exe" in */release/*) profile_before=release ;; *) profile_before=debug ;; esac

restore() {
  set +e
  stop_kube_proxy
  e2e/cluster agent start nc-node-3
  if [ "$profile_before" != release ]; then
    e2e/cluster agent stop nc-node-1
    NODECONFIG_PROFILE="$profile_before" e2e/cluster agent start nc-node-1
  fi
  say "kube-proxy stopped and its rules removed; agents of nc-node-1 ($profile_before) and nc-node-3 running again"
}
trap restore EXIT
trap "exit 143" TERM INT

# nc-node-3: the agent out, its rules out, kube-proxy in.
e2e/cluster agent stop nc-node-3
nsenter --net=/var/run/netns/nc-node-3 -- target/release/node-agent cleanup >/dev/null
start_kube_proxy
for i in $(seq 1 120); do
  curl -fsS --max-time 1 http://10.200.3.2:10256/healthz >/dev/null 2>&1 && break
  kill -0 "$(cat "$kp_pidfile" 2>/dev/null)" 2>/dev/null || { say "kube-proxy exited; see $kp_log"; exit 1; }
  [ "$i" = 120 ] && { say "kube-proxy not healthy after 60s; see $kp_log"; exit 1; }
  sleep 0.5
done

# nc-node-1's agent in the release build.
if [ "$profile_before" != release ]; then
  e2e/cluster agent stop nc-node-1
  NODECONFIG_PROFILE=release e2e/cluster agent start nc-node-1
fi
for i in $(seq 1 120); do
  curl -fsS --max-time 1 http://10.200.1.2:10356/readyz >/dev/null 2>&1 && break
  [ "$i" = 120 ] && { say "agent of nc-node-1 not ready after 60s"; exit 1; }
  sleep 0.5
done

table="$(mktemp)"
rc=0
BENCH_PROXY_TABLE="$table" BENCH_PROXY_RESTART="$repo/e2e/bench/proxy.sh" target/release/bench-proxy run \
  nc-node-1 "$(cat "$agent_pidfile")" nc-node-3 "$(cat "$kp_pidfile")" "$changes" "${sizes[@]}" || rc=$?
[ -s "$table" ] || { rm -f "$table"; say "no size completed (exit $rc)"; exit 1; }

{
  echo "# Service proxy benchmark: the agent vs kube-proxy $K8S_VERSION (iptables mode)"
  echo
  echo "Written by \`e2e/bench/proxy.sh ${sizes[*]}\` on $(date -u +%Y-%m-%d\ %H:%M\ UTC)."
  echo "Machine: $(nproc) cores, kernel $(uname -r), $(iptables --version) — both proxies on this backend."
  echo
  echo "Both proxies watch the same API server; the agent (release build) in nc-node-1, kube-proxy"
  echo "in nc-node-3 (\`--iptables-min-sync-period=1s --iptables-sync-period=30s\`; the agent's"
  echo "NodeConfig has minSyncPeriod 1s, syncPeriod 30s). Each Service: ClusterIP, TCP port 80, no"
  echo "selector, an EndpointSlice of 2 ready endpoints (busybox httpd on nc-node-2's bridge)."
  echo
  [ "$rc" = 0 ] || echo "**Incomplete**: the run failed or was stopped (exit $rc); the sizes below completed."
  [ "$rc" = 0 ] || echo
  cat "$table"
  echo
  echo "- *all dispatch rules in place*: from the first create until \`iptables-save -t nat\` in the"
  echo "  proxy's namespace first shows one dispatch rule per bench Service (\`-j KUBE-SVC-\` in"
  echo "  KUBE-SERVICES, \`-j NC-SVC-\` in the agent's NC-SVCS-* chains), polled every 1 s after each"
  echo "  save finished (a save itself takes seconds at 10,000), so the figure is late by up to one"
  echo "  poll interval plus one save. Creating the objects (32 at a time) is included; the row"
  echo "  below it is the part after the last object was created (the proxy's own lag)."
  echo "- *change latency*: a new Service + EndpointSlice created, until a client inside the node"
  echo "  namespace (TCP connect with a 15 ms timeout + HTTP GET, retried at once) gets an HTTP 200"
  echo "  through the ClusterIP, so the figure is late by up to ~20 ms;"
  echo "  both proxies probed at once, one change at a time, the N bulk Services in place."
  echo "- *TCP connect*: median of 100 sequential new connections from inside the node to the"
  echo "  ClusterIP of the first and of the last created Service (the last has the highest IP)."
  echo "- *cold start*: after the changes, each proxy alone is stopped, its rules removed"
  echo "  (\`node-agent cleanup\`, \`kube-proxy --cleanup\`) and started again, all the Services in place;"
  echo "  from the process's start (/proc starttime) until its last-sync gauge"
  echo "  (\`..._sync_proxy_rules_last_timestamp_seconds\`, read every 100 ms) shows the sync that put the"
  echo "  rules of all of them in place (checked with one iptables-save). RSS and CPU of the new process until then."
  echo "- *peak RSS*: VmHWM, reset (clear_refs 5) at the start of each size; the agent's includes its"
  echo "  kubelet-mode loops. *CPU*: utime+stime from the first create to the last change (clean-up not included)."
  echo "  The reset cannot take VmHWM below the process's RSS at that moment, so a size's figure"
  echo "  includes what the process still held from before it (a larger earlier size, or objects"
  echo "  a killed run left and this run deleted first); the cold-start rows are fresh processes."
  echo "- The agent of nc-node-2 (debug build, it also programs every Service), the API server and"
  echo "  etcd share the same 2 cores, so absolute figures are this machine's, the ratio the point."
} > e2e/bench/proxy-results.md
rm -f "$table"
say "wrote e2e/bench/proxy-results.md"
exit "$rc"
