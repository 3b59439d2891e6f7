# Shared settings and small functions for the local cluster scripts.
# Sourced by e2e/cluster; every path the cluster uses is defined here.

# shellcheck source=../versions.env
source "$(dirname "${BASH_SOURCE[0]}")/../versions.env"

NC_CACHE="${NODECONFIG_CACHE:-/var/cache/nodeconfig}"        # builds, kept across clusters
NC_STATE="${NODECONFIG_STATE:-/var/lib/nodeconfig-e2e}"      # one cluster: certs, data, node dirs
NC_RUN="${NODECONFIG_RUN:-/run/nodeconfig-e2e}"              # pids and sockets
NC_LOGS="$NC_STATE/logs"
NC_NODES="${NODECONFIG_NODES:-2}"                            # number of node namespaces
NC_KUBELET_NODES="${NODECONFIG_KUBELET_NODES:-0}"            # nodes run by the real kubelet (kubelet.sh)

K8S_BIN="$NC_CACHE/k8s-$K8S_VERSION/bin"
ETCD_BIN="$NC_CACHE/etcd-$ETCD_VERSION/bin"
NC_IMAGES="$NC_CACHE/images"

# Addressing. The API server listens on a dummy interface of the host, reachable
# from every node namespace through its default route to the host.
NC_API_IP="10.200.0.1"
NC_API_PORT="${NODECONFIG_API_PORT:-6443}"
NC_ETCD_PORT="${NODECONFIG_ETCD_PORT:-12379}"
NC_ETCD_PEER_PORT="${NODECONFIG_ETCD_PEER_PORT:-12380}"
NC_KCM_PORT=10257
NC_SCHED_PORT=10259
NC_SERVICE_CIDR="10.96.0.0/16"
NC_KUBERNETES_SVC_IP="10.96.0.1"
NC_DNS_IP="10.96.0.10"                 # kube-dns, the conventional address
NC_REGISTRY="$NC_API_IP:5000"          # the image registry on the host (addons.sh)
NC_CLUSTER_CIDR="10.244.0.0/16"        # node i gets 10.244.i.0/24
NC_NODE_LINK_CIDR="10.200.0.0/16"      # node i: host 10.200.i.1/24, node 10.200.i.2/24
NC_KUBELET_LINK_CIDR="10.201.0.0/16"   # kubelet node k: host 10.201.k.1/24, node 10.201.k.2/24
NC_KUBECONFIG="$NC_STATE/admin.kubeconfig"

# A node is named by its index: i (1, 2, ...) for the agent's nodes nc-node-i,
# kK (k1, k2, ...) for the kubelet's nodes nc-kubelet-K. Kubelet node K has
# its own link range and the pod CIDR 10.244.(200+K).0/24, so nodes up to
# nc-node-199 and nc-kubelet-55 never share an address.
node_name()     { case "$1" in k*) echo "nc-kubelet-${1#k}" ;; *) echo "nc-node-$1" ;; esac; }
node_ip()       { case "$1" in k*) echo "10.201.${1#k}.2" ;; *) echo "10.200.$1.2" ;; esac; }
node_host_ip()  { case "$1" in k*) echo "10.201.${1#k}.1" ;; *) echo "10.200.$1.1" ;; esac; }
node_host_if()  { echo "ncveth$1"; }               # host side of the node's veth pair
node_pod_cidr() { case "$1" in k*) echo "10.244.$((200 + ${1#k})).0/24" ;; *) echo "10.244.$1.0/24" ;; esac; }
# Pods get .2-.199 of the pod CIDR (.200-.250 are the proxy tests' backends).
node_pod_range_end() { local c; c="$(node_pod_cidr "$1")"; echo "${c%.0/24}.199"; }
kubelet_node_indexes() { local k; for k in $(seq 1 "$NC_KUBELET_NODES"); do echo "k$k"; done; }
node_dir()      { echo "$NC_STATE/nodes/$(node_name "$1")"; }
node_run_dir()  { echo "$NC_RUN/nodes/$(node_name "$1")"; }
node_cri_socket() { echo "$(node_run_dir "$1")/containerd.sock"; }

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

# Fails with a one-line error when a required command is missing.
require_cmds() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found (run .ci/run or install Debian's package for it)"
  done
}

# pidfile helpers: a component is running when its pidfile names a live process.
pid_alive() { local f="$1"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# Stops the process named by a pidfile: SIGTERM, then SIGKILL after a grace period.
stop_pidfile() {
  local f="$1" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Fails when something else already listens on ip:port (TCP).
require_free_port() {
  local ip="$1" port="$2" what="$3"
  if ss -Hltn "( sport = :$port )" 2>/dev/null | awk '{print $4}' | grep -qE "^(\*|0\.0\.0\.0|\[::\]|$ip):$port$"; then
    die "port $ip:$port for $what is already in use ($(ss -Hltnp "( sport = :$port )" | awk '{print $6}' | head -1))"
  fi
}

# Waits until a command succeeds, or fails with a message after a timeout (seconds).
wait_for() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.3
  done
}
