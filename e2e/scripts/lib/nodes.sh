# Node namespaces of the local cluster. Sourced after common.sh and images.sh.
#
#   nodes_up            brings up nodes 1..$NC_NODES (node_up each); builds the
#                       images first when they are missing or stale
#   node_up <i>         brings up node i; idempotent: a node that is up is left
#                       alone, a half-made one is repaired (or torn down and redone)
#   nodes_down          tears down every node this harness made (found by name,
#                       not only 1..$NC_NODES) and the host plumbing; safe at any
#                       time and twice in a row; never fails
#   nodes_status        one line per node
#   node_exec <name|i> <cmd...>   runs a command in the node's network namespace
#
# A node i is:
#   - network namespace nc-node-i, joined to the host by a veth pair: host
#     ncveth<i> 10.200.i.1/24 <-> node eth0 10.200.i.2/24, default route via the
#     host; the host routes the node's pod CIDR 10.244.i.0/24 via 10.200.i.2, so
#     pods of different nodes reach each other through the host, and the host
#     reaches every pod;
#   - its own containerd (config, root and CNI files under node_dir; state,
#     sockets, runc root and pidfile under node_run_dir), started inside the
#     namespace with nsenter --net (not `ip netns exec`, which remounts /sys and
#     hides the cgroup mounts from runc); its pods get addresses on the node's own
#     bridge cni0 from host-local IPAM with its own data dir; pods get .2-.199
#     (.200-.250 are the proxy tests' backends, see e2e/src/backends.rs).
# Host side: net.ipv4.ip_forward=1, unreachable guard routes for the cluster and
# service CIDRs (the /24 node routes are more specific and win), and, only when
# the host's FORWARD chain would drop node traffic, ACCEPT rules in our own chain
# NC-E2E-FWD; and always an egress guard, NC-E2E-EGRESS, that rejects whatever
# a node or pod sends through the host to an address outside the cluster's own
# ranges (a pod given the host's resolv.conf would otherwise query the host's
# resolver through its default route). What the host looked like before is recorded under
# $NC_RUN/host-before-nodes and put back by nodes_down.

NC_CNI_BIN_DIR="/usr/lib/cni"
NC_FWD_CHAIN="NC-E2E-FWD"
NC_EGRESS_CHAIN="NC-E2E-EGRESS"
_NC_HOST_BEFORE="$NC_RUN/host-before-nodes"
_NC_CONTAINERD_TIMEOUT=30

node_netns_path()         { echo "/var/run/netns/$(node_name "$1")"; }
node_containerd_config()  { echo "$(node_dir "$1")/containerd/config.toml"; }
node_containerd_pidfile() { echo "$(node_run_dir "$1")/containerd.pid"; }
node_containerd_log()     { echo "$NC_LOGS/$(node_name "$1")-containerd.log"; }
node_cni_conf_dir()       { echo "$(node_dir "$1")/cni/net.d"; }
node_cni_network()        { echo "$(node_name "$1")-pods"; }   # CNI network name
# containerd's CRI plugin keeps pod network namespaces here (netns_mounts_under_state_dir).
node_pod_netns_dir()      { echo "$(node_run_dir "$1")/containerd/io.containerd.grpc.v1.cri/netns"; }

# node index from a name or an index: nc-node-2 -> 2, 2 -> 2, nc-kubelet-1 -> k1
_node_index() {
  case "$1" in
    nc-node-*) echo "${1#nc-node-}" ;;
    nc-kubelet-*) echo "k${1#nc-kubelet-}" ;;
    *) echo "$1" ;;
  esac
}

# ---------------------------------------------------------------- helpers

_nodes_ctr() { local i="$1"; shift; ctr --address "$(node_cri_socket "$i")" --connect-timeout 2s "$@"; }

_node_netns_ok() {
  local p; p="$(node_netns_path "$1")"
  [ -e "$p" ] && nsenter --net="$p" true 2>/dev/null
}

_node_nsenter() { local i="$1"; shift; nsenter --net="$(node_netns_path "$i")" -- "$@"; }

_node_containerd_responds() { _nodes_ctr "$1" version >/dev/null 2>&1; }

# A live process (zombies count as gone: nothing may reap them here).
_pid_live() {
  local s
  s="$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}

# Processes that belong to node i, one pid a line: its containerd and shims
# (found by the node's paths in their command lines, so also after the netns is
# gone), everything in the node's netns, everything in one of its pod network
# namespaces, and all their descendants. Never this shell or its ancestors.
_node_pids() {
  local i="$1" dir run ns p l seeds="" inodes=""
  dir="$(node_dir "$i")"; run="$(node_run_dir "$i")"; ns="$(node_name "$i")"

  p="$(cat "$(node_containerd_pidfile "$i")" 2>/dev/null)" && seeds+="$p "
  # its containerd (an argument is its config file) and shims (an argument is
  # its socket), also when the netns is gone; nothing else that names the paths
  for p in $(grep -lzxF -e "$(node_containerd_config "$i")" -e "$(node_cri_socket "$i")" /proc/[0-9]*/cmdline 2>/dev/null); do
    p="${p#/proc/}"; p="${p%/cmdline}"
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in
      containerd|containerd-shim*) seeds+="$p " ;;
    esac
  done
  if _node_netns_ok "$i"; then
    seeds+="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
  fi
  # pod network namespaces: nsfs mounts under the node's dirs
  while read -r p; do
    l="$(stat -L -c %i "$p" 2>/dev/null)" && inodes+="$l "
  done < <(awk -v d="$dir/" -v r="$run/" '$0 ~ / - nsfs / && (index($5, d) == 1 || index($5, r) == 1) {print $5}' /proc/self/mountinfo)
  if [ -n "$inodes" ]; then
    seeds+="$(stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null | awk -v want=" $inodes" '
      index(want, " " $1 " ") { split($2, a, "/"); printf "%s ", a[3] }')"
  fi

  # descendants, minus ourselves and our ancestors, minus pid 1
  local self=" 1 " q=$BASHPID
  while [ -n "$q" ] && [ "$q" != 0 ] && [ "$q" != 1 ]; do
    self+="$q "
    q="$(awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$q/stat" 2>/dev/null)"
  done
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v seeds="$seeds" -v self="$self" '
    { pid = $1; sub(/^.*\) /, ""); parent[pid] = $2; state[pid] = $1; pids[NR] = pid }
    END {
      n = split(seeds, s, " "); for (k = 1; k <= n; k++) if (s[k] != "") mark[s[k]] = 1
      do {
        changed = 0
        for (k in pids) { p = pids[k]; if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1 } }
      } while (changed)
      for (p in mark) if (index(self, " " p " ") == 0 && (p in parent) && state[p] != "Z" && state[p] != "X") print p
    }'
}

# Kills the given pids with a signal and waits (up to ~5 s) until they are gone.
_nodes_kill_wait() {
  local sig="$1" p n; shift
  [ $# -gt 0 ] || return 0
  kill "-$sig" "$@" 2>/dev/null || true
  for n in $(seq 1 50); do
    local any=0
    for p in "$@"; do _pid_live "$p" && { any=1; break; }; done
    [ "$any" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}

# Mount points under a directory, deepest first.
_nodes_mounts_under() {
  awk -v d="$1/" -v e="$1" '(index($5, d) == 1 || $5 == e) {print $5}' /proc/self/mountinfo |
    awk '{ print length($0), $0 }' | sort -rn | cut -d' ' -f2- | uniq
}

_nodes_unmount_under() {
  local d="$1" m pass
  for pass in 1 2 3 4 5; do
    local any=0
    while read -r m; do
      [ -n "$m" ] || continue
      any=1
      # mountinfo escapes spaces etc. as octal
      m="$(printf '%b' "${m//\\/\\0}")"
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(_nodes_mounts_under "$d")
    [ "$any" = 0 ] && return 0
  done
  [ -z "$(_nodes_mounts_under "$d")" ]
}

# ---------------------------------------------------------------- host side

# Records, once, what the host looked like before the first node came up.
_nodes_host_record() {
  [ -d "$_NC_HOST_BEFORE" ] && return 0
  mkdir -p "$_NC_HOST_BEFORE"
  cat /proc/sys/net/ipv4/ip_forward >"$_NC_HOST_BEFORE/ip_forward"
  [ -d /run/netns ] || touch "$_NC_HOST_BEFORE/created-run-netns"
  mountpoint -q /run/netns 2>/dev/null || touch "$_NC_HOST_BEFORE/mounted-run-netns"
  [ -d /var/lib/cni ] || touch "$_NC_HOST_BEFORE/created-var-lib-cni"
  [ -d /run/containerd ] || touch "$_NC_HOST_BEFORE/created-run-containerd"
  [ -d /run/mount ] || touch "$_NC_HOST_BEFORE/created-run-mount"   # util-linux's utab, made by umount
  [ -d /var/log/containers ] || touch "$_NC_HOST_BEFORE/created-var-log-containers"   # a kubelet's (kubelet.sh)
}

# Does the host's FORWARD chain need our ACCEPT rules? (policy DROP, or any rule
# in it that could drop or reject node traffic)
_nodes_forward_needs_accept() {
  local rules
  rules="$(iptables -w 5 -S FORWARD 2>/dev/null)" || return 1
  echo "$rules" | grep -qx -- '-P FORWARD DROP' && return 0
  echo "$rules" | grep -v -- '^-P ' | grep -v -- "-j $NC_FWD_CHAIN\$" | grep -v -- "-j $NC_EGRESS_CHAIN\$" | grep -q .
}

_nodes_host_up() {
  _nodes_host_record
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || sysctl -qw net.ipv4.ip_forward=1 || return 1
  # Guards: a packet for a pod or service address that no node route covers is
  # dropped here instead of leaving through the host's default route.
  ip route replace unreachable "$NC_CLUSTER_CIDR" || return 1
  ip route replace unreachable "$NC_SERVICE_CIDR" || return 1
  # Traffic stays home: forwarded from the nodes, only to the cluster's ranges.
  iptables -w 5 -S "$NC_EGRESS_CHAIN" >/dev/null 2>&1 || iptables -w 5 -N "$NC_EGRESS_CHAIN" || return 1
  iptables -w 5 -F "$NC_EGRESS_CHAIN" || return 1
  local r
  for r in "$NC_NODE_LINK_CIDR" "$NC_KUBELET_LINK_CIDR" "$NC_CLUSTER_CIDR" "$NC_SERVICE_CIDR"; do
    iptables -w 5 -A "$NC_EGRESS_CHAIN" -d "$r" -j RETURN || return 1
  done
  iptables -w 5 -A "$NC_EGRESS_CHAIN" -j REJECT --reject-with icmp-net-prohibited || return 1
  iptables -w 5 -C FORWARD -i 'ncveth+' -j "$NC_EGRESS_CHAIN" 2>/dev/null ||
    iptables -w 5 -I FORWARD 1 -i 'ncveth+' -j "$NC_EGRESS_CHAIN" || return 1
  if _nodes_forward_needs_accept; then
    iptables -w 5 -S "$NC_FWD_CHAIN" >/dev/null 2>&1 || iptables -w 5 -N "$NC_FWD_CHAIN" || return 1
    iptables -w 5 -F "$NC_FWD_CHAIN" || return 1
    local s d
    for s in "$NC_NODE_LINK_CIDR" "$NC_KUBELET_LINK_CIDR" "$NC_CLUSTER_CIDR"; do
      for d in "$NC_NODE_LINK_CIDR" "$NC_KUBELET_LINK_CIDR" "$NC_CLUSTER_CIDR"; do
        iptables -w 5 -A "$NC_FWD_CHAIN" -i 'ncveth+' -o 'ncveth+' -s "$s" -d "$d" -j ACCEPT || return 1
      done
    done
    iptables -w 5 -C FORWARD -j "$NC_FWD_CHAIN" 2>/dev/null || iptables -w 5 -I FORWARD 1 -j "$NC_FWD_CHAIN" || return 1
  fi
}

_nodes_host_down() {
  local r
  for r in "$NC_CLUSTER_CIDR" "$NC_SERVICE_CIDR"; do
    [ -n "$(ip route show type unreachable "$r" 2>/dev/null)" ] && ip route del unreachable "$r" 2>/dev/null
  done
  if iptables -w 5 -S "$NC_EGRESS_CHAIN" >/dev/null 2>&1; then
    while iptables -w 5 -D FORWARD -i 'ncveth+' -j "$NC_EGRESS_CHAIN" 2>/dev/null; do :; done
    iptables -w 5 -F "$NC_EGRESS_CHAIN" 2>/dev/null
    iptables -w 5 -X "$NC_EGRESS_CHAIN" 2>/dev/null
  fi
  if iptables -w 5 -S "$NC_FWD_CHAIN" >/dev/null 2>&1; then
    while iptables -w 5 -D FORWARD -j "$NC_FWD_CHAIN" 2>/dev/null; do :; done
    iptables -w 5 -F "$NC_FWD_CHAIN" 2>/dev/null
    iptables -w 5 -X "$NC_FWD_CHAIN" 2>/dev/null
  fi
  [ -d "$_NC_HOST_BEFORE" ] || return 0
  if [ -f "$_NC_HOST_BEFORE/ip_forward" ] && [ "$(cat "$_NC_HOST_BEFORE/ip_forward")" != "$(cat /proc/sys/net/ipv4/ip_forward)" ]; then
    sysctl -qw net.ipv4.ip_forward="$(cat "$_NC_HOST_BEFORE/ip_forward")" 2>/dev/null
  fi
  # `ip netns add` turns /run/netns into a shared mount point; undo that only
  # when we caused it and no namespace is left in it.
  if [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    [ -f "$_NC_HOST_BEFORE/mounted-run-netns" ] && mountpoint -q /run/netns 2>/dev/null && umount /run/netns 2>/dev/null
    [ -f "$_NC_HOST_BEFORE/created-run-netns" ] && ! mountpoint -q /run/netns 2>/dev/null && rmdir /run/netns 2>/dev/null
  fi
  # libcni's result cache and the shims' socket dir are host-global in containerd 1.6.
  if [ -f "$_NC_HOST_BEFORE/created-var-lib-cni" ] && [ -d /var/lib/cni ] && [ -z "$(find /var/lib/cni ! -type d 2>/dev/null | head -1)" ]; then
    rm -rf /var/lib/cni
  fi
  # /run/containerd/s holds the shims' sockets; `ctr run`/`ctr tasks exec` by hand
  # add fifo/ and runc/. Gone when we made the dir and no system containerd lives there.
  if [ -f "$_NC_HOST_BEFORE/created-run-containerd" ] && [ -d /run/containerd ] &&
     [ ! -S /run/containerd/containerd.sock ] && [ -z "$(find /run/containerd -type s 2>/dev/null | head -1)" ]; then
    rm -rf --one-file-system /run/containerd
  fi
  [ -f "$_NC_HOST_BEFORE/created-run-mount" ] && rmdir /run/mount 2>/dev/null
  [ -f "$_NC_HOST_BEFORE/created-var-log-containers" ] && rmdir /var/log/containers 2>/dev/null
  rm -rf "$_NC_HOST_BEFORE"
  true
}

# ---------------------------------------------------------------- node files

_node_write_if_changed() {
  local f="$1" tmp
  tmp="$f.tmp.$$"
  cat >"$tmp"
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$f"
  return 0
}

# Writes containerd's config and the CNI config; returns 0 when something changed.
_node_write_config() {
  local i="$1" dir run cni changed=1
  dir="$(node_dir "$i")"; run="$(node_run_dir "$i")"; cni="$(node_cni_conf_dir "$i")"
  mkdir -p "$dir/containerd/root" "$dir/containerd/tmp" "$dir/cni/ipam" "$cni" "$run" "$NC_LOGS"

  _node_write_if_changed "$(node_containerd_config "$i")" <<EOF && changed=0
# containerd of $(node_name "$i"), written by e2e/scripts/lib/nodes.sh.
version = 2
root = "$dir/containerd/root"
state = "$run/containerd"
temp = "$dir/containerd/tmp"
oom_score = 0
# Not needed here: other snapshotters, tracing, /opt installs. (The v1 runtime
# io.containerd.runtime.v1.linux must stay: 1.6's tasks service, and so CRI, need it.)
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$(node_cri_socket "$i")"
  tcp_address = ""

[ttrpc]
  address = "$run/containerd.sock.ttrpc"

# No debug socket, no metrics listener.
[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NC_IMAGE_PAUSE"
  # Without it runc fails here: "failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  # Pod network namespaces under this node's state dir (not /run/netns), so
  # nodes_down can tell them from anybody else's.
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  # Streaming (exec/attach/port-forward) on the node namespace's loopback only.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc's state per node, not the shared /run/containerd/runc.
        Root = "$run/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$NC_CNI_BIN_DIR"
    conf_dir = "$cni"
    max_conf_num = 1

  # The host's registry ($NC_REGISTRY) over plain HTTP: certs.d/<host>/hosts.toml.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/containerd/certs.d"
EOF

  mkdir -p "$dir/containerd/certs.d/$NC_REGISTRY"
  _node_write_if_changed "$dir/containerd/certs.d/$NC_REGISTRY/hosts.toml" <<EOF
server = "http://$NC_REGISTRY"

[host."http://$NC_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF

  # containerd's CRI plugin adds the loopback network to every pod itself
  # (go-cni's WithLoNetwork), so only the pod network is configured here;
  # portmap makes the pods' hostPorts (CRI port mappings) as a kubelet's CNI does.
  _node_write_if_changed "$cni/10-pods.conflist" <<EOF && changed=0
{
  "cniVersion": "1.0.0",
  "name": "$(node_cni_network "$i")",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{ "subnet": "$(node_pod_cidr "$i")", "rangeEnd": "$(node_pod_range_end "$i")" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  return $changed
}

# ---------------------------------------------------------------- node up

_node_net_up() {
  local i="$1" ns hif
  ns="$(node_name "$i")"; hif="$(node_host_if "$i")"
  _node_netns_ok "$i" || ip netns add "$ns" || return 1
  if ! ip link show "$hif" >/dev/null 2>&1 || ! _node_nsenter "$i" ip link show eth0 >/dev/null 2>&1; then
    ip link del "$hif" 2>/dev/null
    _node_nsenter "$i" ip link del eth0 2>/dev/null
    ip link add "$hif" type veth peer name eth0 netns "$ns" || return 1
  fi
  ip addr replace "$(node_host_ip "$i")/24" dev "$hif" || return 1
  ip link set "$hif" up || return 1
  _node_nsenter "$i" ip link set lo up || return 1
  _node_nsenter "$i" ip addr replace "$(node_ip "$i")/24" dev eth0 || return 1
  _node_nsenter "$i" ip link set eth0 up || return 1
  _node_nsenter "$i" ip route replace default via "$(node_host_ip "$i")" dev eth0 || return 1
  # The node routes between its pods' bridge and eth0.
  _node_nsenter "$i" sysctl -qw net.ipv4.ip_forward=1 || return 1
  ip route replace "$(node_pod_cidr "$i")" via "$(node_ip "$i")" dev "$hif" || return 1
}

# Is anything of node i there at all (dirs, link, processes)?
_node_exists() {
  local i="$1"
  [ -e "$(node_dir "$i")" ] || [ -e "$(node_run_dir "$i")" ] || [ -e "$(node_netns_path "$i")" ] ||
    ip link show "$(node_host_if "$i")" >/dev/null 2>&1 || [ -n "$(_node_pids "$i")" ]
}

_node_containerd_start() {
  local i="$1" ns cfg pidfile logf sock deadline pid
  ns="$(node_name "$i")"; cfg="$(node_containerd_config "$i")"; pidfile="$(node_containerd_pidfile "$i")"
  logf="$(node_containerd_log "$i")"; sock="$(node_cri_socket "$i")"
  mkdir -p "$(dirname "$logf")"
  echo "---- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting containerd of $ns" >>"$logf"
  # The wrapper writes its own pid, then execs nsenter, which execs containerd:
  # the pidfile names containerd whatever setsid does.
  setsid bash -c 'echo $$ >"$1"; exec nsenter --net="$2" -- containerd --config "$3"' _ \
    "$pidfile" "$(node_netns_path "$i")" "$cfg" </dev/null >>"$logf" 2>&1 9>&- &
  deadline=$(( $(date +%s) + _NC_CONTAINERD_TIMEOUT ))
  until _node_containerd_responds "$i"; do
    pid="$(cat "$pidfile" 2>/dev/null)"
    if [ -n "$pid" ] && ! _pid_live "$pid"; then
      die "$ns: containerd exited while starting ($(grep -E 'level=(fatal|error)' "$logf" | tail -1 | cut -c1-200)); see $logf"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      stop_pidfile "$pidfile"   # a hung containerd would hold the socket
      die "$ns: containerd did not answer on $sock within ${_NC_CONTAINERD_TIMEOUT}s; see $logf"
    fi
    sleep 0.1
  done
  # containerd answers even when its CRI plugin failed to load; a node without CRI is no node.
  if [ "$(_nodes_ctr "$i" plugins ls 2>/dev/null | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" {print $NF}')" != ok ]; then
    die "$ns: containerd's CRI plugin did not load ($(grep -E 'failed to load plugin io.containerd.grpc.v1.cri' "$logf" | tail -1 | sed 's/.*error=//' | cut -c1-200)); see $logf"
  fi
}

_node_containerd_up() {
  local i="$1" restart="$2" pidfile pid p
  pidfile="$(node_containerd_pidfile "$i")"
  pid="$(cat "$pidfile" 2>/dev/null)"
  if [ -n "$pid" ] && _pid_live "$pid"; then
    # Running: keep it if it answers, is ours (in the node's netns) and its config did not change.
    if [ "$restart" != 1 ] && _node_containerd_responds "$i" &&
       [ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" = "$(stat -L -c %i "$(node_netns_path "$i")" 2>/dev/null)" ]; then
      return 0
    fi
    log "$(node_name "$i"): restarting containerd"
    stop_pidfile "$pidfile"
  fi
  rm -f "$pidfile"
  # A containerd of this node whose pidfile is lost would hold the socket: stop it.
  for p in $(_node_pids "$i"); do
    case "$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")" in
      "containerd --config $(node_containerd_config "$i")"*) _nodes_kill_wait TERM "$p" || _nodes_kill_wait KILL "$p" ;;
    esac
  done
  _node_containerd_start "$i"
}

# Brings up node i (see the top of this file). Fails with a one-line error naming
# the node and its containerd log when containerd does not come up.
_node_up() {
  local i="$1" ns restart=0
  ns="$(node_name "$i")"
  require_cmds ip nsenter setsid containerd containerd-shim-runc-v2 runc ctr iptables sysctl
  [ -x "$NC_CNI_BIN_DIR/bridge" ] && [ -x "$NC_CNI_BIN_DIR/host-local" ] && [ -x "$NC_CNI_BIN_DIR/loopback" ] ||
    die "CNI plugins missing in $NC_CNI_BIN_DIR (install Debian's containernetworking-plugins)"
  _nodes_host_up || die "$ns: host plumbing (ip_forward, guard routes, FORWARD rules) failed"

  # A node whose netns is gone while parts of it remain (dirs, processes in a
  # detached namespace) cannot be repaired in place: tear it down and redo it.
  if ! _node_netns_ok "$i" && _node_exists "$i"; then
    log "$ns: half-made (no network namespace); tearing it down first"
    _node_down "$i"
  fi
  _node_net_up "$i" || die "$ns: setting up its network namespace and veth failed"
  _node_write_config "$i" && restart=1
  _node_containerd_up "$i" "$restart"
  _images_import "$i" || die "$ns: importing images into its containerd failed; see $(node_containerd_log "$i")"
}

_nodes_up() {
  local i
  _images_build || die "building the local images failed"
  for i in $(seq 1 "$NC_NODES"); do
    _node_up "$i" || exit 1
  done
}

# ---------------------------------------------------------------- node down

# Tears down node i; best effort, never fails.
_node_down() {
  local i="$1" ns dir run pids f s id socks="" ids=""
  ns="$(node_name "$i")"; dir="$(node_dir "$i")"; run="$(node_run_dir "$i")"

  # Shim sockets live in the host-global /run/containerd/s; each task bundle
  # records its shim's address. Sandbox ids name libcni's cache entries.
  for f in "$run"/containerd/io.containerd.runtime.v2.task/*/*/address; do
    [ -f "$f" ] || continue
    s="$(cat "$f" 2>/dev/null)"; s="${s#unix://}"
    case "$s" in /run/containerd/s/*) socks+="$s " ;; esac
  done
  for f in "$dir"/containerd/root/io.containerd.grpc.v1.cri/sandboxes/* "$run"/containerd/io.containerd.grpc.v1.cri/sandboxes/*; do
    [ -e "$f" ] && ids+="$(basename "$f") "
  done

  # A kubelet first (it would restart what goes), containerd next (gracefully),
  # then everything else of the node.
  stop_pidfile "$run/kubelet.pid"
  stop_pidfile "$(node_containerd_pidfile "$i")"
  for _ in 1 2 3; do
    pids="$(_node_pids "$i" | tr '\n' ' ')"
    [ -n "${pids// /}" ] || break
    # shellcheck disable=SC2086
    _nodes_kill_wait KILL $pids
  done

  for s in $socks; do rm -f "$s"; done
  if [ -d /var/lib/cni/results ]; then
    rm -f /var/lib/cni/results/"$(node_cni_network "$i")"-*
    for id in $ids; do rm -f /var/lib/cni/results/*-"$id"-*; done
  fi

  _nodes_unmount_under "$run" || log "$ns: some mounts under $run would not go"
  _nodes_unmount_under "$dir" || log "$ns: some mounts under $dir would not go"

  # What a kubelet leaves outside the node's dirs (kubelet.sh), once its processes are gone.
  declare -F _kubelet_node_cleanup >/dev/null && _kubelet_node_cleanup "$i"

  ip route del "$(node_pod_cidr "$i")" 2>/dev/null
  ip link del "$(node_host_if "$i")" 2>/dev/null
  if [ -e "$(node_netns_path "$i")" ]; then
    ip netns delete "$ns" 2>/dev/null || { umount -l "$(node_netns_path "$i")" 2>/dev/null; rm -f "$(node_netns_path "$i")"; }
  fi

  [ -z "$(_nodes_mounts_under "$run")" ] && rm -rf --one-file-system "$run"
  [ -z "$(_nodes_mounts_under "$dir")" ] && rm -rf --one-file-system "$dir"
  true
}

# Indexes of every node this harness may have made: 1..$NC_NODES and whatever
# is found by name (netns, host links, dirs), so a cluster made with more nodes
# than NC_NODES now says is still torn down completely.
_nodes_known() {
  {
    seq 1 "$NC_NODES"
    kubelet_node_indexes
    ls /var/run/netns 2>/dev/null | sed -n -e 's/^nc-node-\([0-9][0-9]*\)$/\1/p' -e 's/^nc-kubelet-\([0-9][0-9]*\)$/k\1/p'
    ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: ncveth\(k\{0,1\}[0-9][0-9]*\)[@:].*/\1/p'
    ls "$NC_STATE/nodes" "$NC_RUN/nodes" 2>/dev/null | sed -n -e 's/^nc-node-\([0-9][0-9]*\)$/\1/p' -e 's/^nc-kubelet-\([0-9][0-9]*\)$/k\1/p'
  } | sort -u
}

_nodes_down() {
  local i pid known
  known="$(_nodes_known)"
  # Ask every node's containerd to stop at once (each takes ~1 s), then tear down.
  for i in $known; do
    pid="$(cat "$(node_containerd_pidfile "$i")" 2>/dev/null)" && [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  done
  for i in $known; do
    _node_down "$i"
  done
  _nodes_host_down
  rmdir "$NC_RUN/nodes" "$NC_STATE/nodes" 2>/dev/null
  true
}

# ---------------------------------------------------------------- status, exec

_nodes_status() {
  local i ns pid cd netns counts sb ct
  for i in $(_nodes_known); do
    ns="$(node_name "$i")"
    netns=no; _node_netns_ok "$i" && netns=yes
    pid="$(cat "$(node_containerd_pidfile "$i")" 2>/dev/null)"
    if [ -n "$pid" ] && _pid_live "$pid"; then
      if _node_containerd_responds "$i"; then
        cd="running(pid $pid, responding)"
        sb="$(_nodes_ctr "$i" -n k8s.io containers ls -q 'labels."io.cri-containerd.kind"==sandbox' 2>/dev/null | grep -c .)"
        ct="$(_nodes_ctr "$i" -n k8s.io containers ls -q 'labels."io.cri-containerd.kind"==container' 2>/dev/null | grep -c .)"
        counts="sandboxes=$sb containers=$ct"
      else
        cd="running(pid $pid, NOT responding)"; counts="sandboxes=? containers=?"
      fi
    else
      cd="stopped"; counts="sandboxes=? containers=?"
    fi
    echo "$ns netns=$netns containerd=$cd cri=unix://$(node_cri_socket "$i") podCIDR=$(node_pod_cidr "$i") $counts"
  done
}

# node_exec <nc-node-i | i> <cmd...>: runs a command in the node's network namespace.
_node_exec() {
  local i
  [ $# -ge 2 ] || { echo "usage: node_exec <node name|index> <cmd...>" >&2; return 2; }
  i="$(_node_index "$1")"; shift
  _node_netns_ok "$i" || { echo "cluster: error: no network namespace $(node_name "$i")" >&2; return 1; }
  _node_nsenter "$i" "$@"
}

# ---------------------------------------------------------------- entry points

# The public functions run in a subshell with the caller's errexit, nounset,
# pipefail and ERR trap off: inside, a probe that fails is an answer, not an
# error, and failures are handled explicitly. They report by exit status (and
# a one-line "cluster: error: ..." on stderr), so `nodes_up || exit 1` and
# `set -e` callers both work.
_nodes_isolated() { ( set +e +u +E +o pipefail; trap - ERR; "$@" ); }
nodes_up()     { _nodes_isolated _nodes_up "$@"; }
node_up()      { _nodes_isolated _node_up "$@"; }
nodes_down()   { _nodes_isolated _nodes_down "$@"; }
nodes_status() { _nodes_isolated _nodes_status "$@"; }
node_exec()    { _nodes_isolated _node_exec "$@"; }
