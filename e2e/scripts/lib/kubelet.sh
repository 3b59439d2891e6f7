# Nodes run by the real kubelet of the pinned version, on their own containerd,
# next to the agent's nodes: where Companion mode runs (the operator's
# node-agent DaemonSet takes kube-proxy's place there). Sourced by e2e/cluster
# after nodes.sh and controlplane.sh; opt-in with NODECONFIG_KUBELET_NODES=K.
#
#   kubelet_nodes_up     brings up nc-kubelet-1..K: the node namespace and its
#                        containerd as nodes.sh makes every node (index kK), a
#                        client certificate for system:node:nc-kubelet-K, a
#                        KubeletConfiguration, the kubelet; waits for the Node
#   kubelet_start|stop <name|index>   one node's kubelet
#   kubelet_status       one line per kubelet
#   (nodes_down tears the nodes down with the others; it stops the kubelet first)
#
# Node nc-kubelet-K (see common.sh): netns nc-kubelet-K, veth ncvethkK with
# host 10.201.K.1/24 <-> node 10.201.K.2/24, pods in 10.244.(200+K).0/24 routed
# through the host like every node's. The kubelet starts with nsenter --net
# (not `ip netns exec`, which remounts /sys and hides the cgroup mounts), has
# its own root dir, pod logs dir and cgroup root (/nc-kubelet-K in every v1
# hierarchy, so its kubepods tree is its own) and serves on the node's address.
# It registers without nodeconfig.dev/agent-managed (so the operator gives it a
# Companion NodeConfig and the node-agent DaemonSet) and with the taint
# $NC_KUBELET_TAINT:NoSchedule, so only pods that ask for it (the DaemonSet
# tolerates every taint; e2e/tests/companion.rs) run there and the other tests
# keep running on the agent's nodes. No kube-proxy: the DaemonSet's agent
# programs the node's Services.

NC_KUBELET_TAINT="nodeconfig.dev/kubelet-node"
_NC_KUBELET_READY_TIMEOUT=90

kubelet_dir()        { echo "$(node_dir "$1")/kubelet"; }          # --root-dir
kubelet_config()     { echo "$(node_dir "$1")/kubelet-config.yaml"; }
kubelet_kubeconfig() { echo "$NC_STATE/$(node_name "$1").kubeconfig"; }
kubelet_pidfile()    { echo "$(node_run_dir "$1")/kubelet.pid"; }
kubelet_log()        { echo "$NC_LOGS/$(node_name "$1")-kubelet.log"; }
kubelet_cgroup_root() { echo "/$(node_name "$1")"; }

# The cgroup hierarchies, v1 named ones (name=systemd) and a hybrid host's v2 too: the kubelet's cgroupfs
# driver wants its cgroup root in every one.
_kubelet_cgroup_hierarchies() {
  awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts
}

_kubelet_write_config() {
  local i="$1" dir
  dir="$(node_dir "$i")"
  mkdir -p "$(kubelet_dir "$i")" "$dir/pod-logs"
  cat >"$(kubelet_config "$i")" <<EOF
# The kubelet of $(node_name "$i"), written by e2e/scripts/lib/kubelet.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$(node_cri_socket "$i")
imageServiceEndpoint: unix://$(node_cri_socket "$i")
# containerd runs runc with SystemdCgroup = false (nodes.sh).
cgroupDriver: cgroupfs
cgroupRoot: $(kubelet_cgroup_root "$i")
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
# This host mounts cgroup v1 hierarchies (hybrid); 1.35+ refuses v1 unless told.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$NC_DNS_IP]
clusterDomain: cluster.local
# No search domains or resolvers of the host's: pods use the cluster's DNS.
resolvConf: ""
podLogsDir: $dir/pod-logs
registerNode: true
registerWithTaints:
- {key: $NC_KUBELET_TAINT, value: "true", effect: NoSchedule}
rotateCertificates: false
serverTLSBootstrap: false
# The host's disk is shared and may be fuller than a real node's: no image GC
# (it would remove the imported images) and no disk-pressure eviction.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
EOF
}

_kubelet_credentials() {
  local i="$1" name
  name="$(node_name "$i")"
  issue_cert "node-$name" "system:node:$name" "system:nodes" "" client
  write_kubeconfig "$(kubelet_kubeconfig "$i")" "system:node:$name" "node-$name"
}

_kubelet_cgroups_up() {
  local i="$1" h
  for h in $(_kubelet_cgroup_hierarchies); do
    mkdir -p "$h$(kubelet_cgroup_root "$i")" || return 1
  done
  # cpuset children start empty; inherit the parent's CPUs and memory nodes.
  h="$(_kubelet_cgroup_hierarchies | grep '/cpuset$' | head -1)"
  if [ -n "$h" ]; then
    local c="$h$(kubelet_cgroup_root "$i")"
    [ -s "$c/cpuset.cpus" ] || cat "$h/cpuset.cpus" >"$c/cpuset.cpus"
    [ -s "$c/cpuset.mems" ] || cat "$h/cpuset.mems" >"$c/cpuset.mems"
  fi
}

# What the kubelet of node i leaves outside the node's dirs, removed once its
# processes are gone (nodes.sh's _node_down calls it): its cgroup trees
# (deepest first), and its links in /var/log/containers (a fixed path in the
# kubelet) to the node's pod logs.
_kubelet_node_cleanup() {
  local i="$1" h l
  case "$i" in k*) ;; *) return 0 ;; esac
  for h in $(_kubelet_cgroup_hierarchies); do
    [ -d "$h$(kubelet_cgroup_root "$i")" ] || continue
    find "$h$(kubelet_cgroup_root "$i")" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  for l in /var/log/containers/*.log; do
    [ -L "$l" ] || continue
    case "$(readlink "$l")" in "$(node_dir "$i")/pod-logs/"*) rm -f "$l" ;; esac
  done
  true
}

_kubelet_start() {
  local i="$1" name pidfile
  name="$(node_name "$i")"; pidfile="$(kubelet_pidfile "$i")"
  pid_alive "$pidfile" && return 0
  _node_netns_ok "$i" || die "$name: no network namespace (is the node up?)"
  echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting the kubelet of $name" >>"$(kubelet_log "$i")"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" \
    nsenter --net="$(node_netns_path "$i")" -- "$K8S_BIN/kubelet" \
      --config "$(kubelet_config "$i")" --kubeconfig "$(kubelet_kubeconfig "$i")" \
      --root-dir "$(kubelet_dir "$i")" --hostname-override "$name" --node-ip "$(node_ip "$i")" \
      --v=1 </dev/null >>"$(kubelet_log "$i")" 2>&1 9>&- &
}

_kubelet_stop() { stop_pidfile "$(kubelet_pidfile "$1")"; }

_kubelet_node_ready() {
  [ "$("$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" get node "$1" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

_kubelet_await_ready() {
  local i="$1" name deadline
  name="$(node_name "$i")"
  deadline=$(( $(date +%s) + _NC_KUBELET_READY_TIMEOUT ))
  until _kubelet_node_ready "$name"; do
    pid_alive "$(kubelet_pidfile "$i")" ||
      die "$name: the kubelet exited while starting: $(grep -E '^[EF][0-9]{4} ' "$(kubelet_log "$i")" | tail -n 2 | cut -c1-300 | tr '\n' ' '); see $(kubelet_log "$i")"
    [ "$(date +%s)" -lt "$deadline" ] ||
      die "$name: the Node is not Ready after ${_NC_KUBELET_READY_TIMEOUT}s: $(grep -E '^E[0-9]{4} ' "$(kubelet_log "$i")" | tail -n 2 | cut -c1-300 | tr '\n' ' '); see $(kubelet_log "$i")"
    sleep 0.5
  done
}

_kubelet_node_up() {
  local i="$1" name
  name="$(node_name "$i")"
  [ -x "$K8S_BIN/kubelet" ] || die "kubelet $K8S_VERSION is not built in $K8S_BIN (run e2e/scripts/build-control-plane.sh kubelet)"
  _node_up "$i" || exit 1
  _kubelet_credentials "$i"
  _kubelet_write_config "$i"
  _kubelet_cgroups_up "$i" || die "$name: cannot make its cgroup root $(kubelet_cgroup_root "$i")"
  _kubelet_start "$i"
  _kubelet_await_ready "$i"
  # The pod CIDR its containerd's CNI hands out, on the Node as the agents
  # register theirs (the controller manager allocates none here).
  "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" patch node "$name" --type merge \
    -p "{\"spec\":{\"podCIDR\":\"$(node_pod_cidr "$i")\",\"podCIDRs\":[\"$(node_pod_cidr "$i")\"]}}" >/dev/null 2>&1 || true
}

_kubelet_nodes_up() {
  local i t0
  for i in $(kubelet_node_indexes); do
    t0=$(date +%s%N)
    _kubelet_node_up "$i" || exit 1
    log "$(node_name "$i"): Ready in $(( ($(date +%s%N) - t0) / 1000000 )) ms (node namespace, containerd, images, kubelet)"
  done
}

_kubelet_status() {
  local i f
  for i in $(_nodes_known); do
    case "$i" in k*) ;; *) continue ;; esac
    f="$(kubelet_pidfile "$i")"
    if pid_alive "$f"; then printf '%-26s running (pid %s)\n' "kubelet-$(node_name "$i")" "$(cat "$f")"
    else printf '%-26s stopped\n' "kubelet-$(node_name "$i")"; fi
  done
}

kubelet_nodes_up() { _nodes_isolated _kubelet_nodes_up "$@"; }
kubelet_start()    { _nodes_isolated _kubelet_start "$(_node_index "$1")"; }
kubelet_stop()     { _nodes_isolated _kubelet_stop "$(_node_index "$1")"; }
kubelet_status()   { _nodes_isolated _kubelet_status "$@"; }
