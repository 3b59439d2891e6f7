# nodeconfig itself on the local cluster: the manifests (without the operator
# Deployment, whose pods need a kubelet), two operator replicas on the host and
# one node-agent per node namespace in Kubelet mode. Sourced by e2e/cluster.

NCF_RUN="$NC_RUN/nodeconfig"
NC_OPERATOR_REPLICAS=2
NC_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
NC_PROFILE="${NODECONFIG_PROFILE:-debug}"   # cargo profile of the binaries the cluster runs

nodeconfig_bin() {
  local dir="$NC_PROFILE"; [ "$dir" = dev ] && dir=debug
  echo "${CARGO_TARGET_DIR:-$NC_REPO/target}/$dir/$1"
}

nodeconfig_build() {
  local flag=(); [ "$NC_PROFILE" = debug ] || flag=(--profile "$NC_PROFILE")
  log "building node-agent and nodeconfig-operator ($NC_PROFILE)"
  (cd "$NC_REPO" && cargo build --locked -q "${flag[@]}" -p node-agent -p nodeconfig-operator) \
    || die "cargo build of node-agent and nodeconfig-operator failed"
}

# The operator runs with the RBAC of its ServiceAccount: a client certificate
# whose user name is the ServiceAccount's, so the manifests' RBAC is what is tested.
nodeconfig_credentials() {
  issue_cert operator "system:serviceaccount:nodeconfig-system:nodeconfig-operator" "" "" client
  write_kubeconfig "$NC_STATE/operator.kubeconfig" nodeconfig-operator operator
}

nodeconfig_manifests() {
  "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" apply --server-side --force-conflicts \
    -k "$NC_REPO/e2e/manifests" >/dev/null || die "kubectl apply -k e2e/manifests failed"
  "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" wait --for condition=Established \
    crd/nodeconfigs.nodeconfig.dev --timeout=60s >/dev/null || die "the NodeConfig CRD did not become Established"
}

# operator_start N: replica N on the host, metrics on 127.0.0.1:1808N.
operator_start() {
  local n="$1" pidfile="$NCF_RUN/operator-$1.pid"
  pid_alive "$pidfile" && return 0
  mkdir -p "$NCF_RUN" "$NC_LOGS"
  require_free_port 127.0.0.1 "1808$n" "nodeconfig-operator replica $n"
  POD_NAME="operator-$n" RUST_LOG="${RUST_LOG:-info}" setsid "$(nodeconfig_bin nodeconfig-operator)" \
    --kubeconfig "$NC_STATE/operator.kubeconfig" --listen "127.0.0.1:1808$n" \
    >>"$NC_LOGS/operator-$n.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$pidfile"
}

operator_stop() { stop_pidfile "$NCF_RUN/operator-$1.pid"; }
operator_kill() {
  local f="$NCF_RUN/operator-$1.pid"
  [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; rm -f "$f"
}

# agent_start I: node-agent of node I inside its namespace, as the node's kubelet,
# with the node's own identity; health and metrics on the node's address.
# net.core.somaxconn is an allowed unsafe sysctl (e2e/tests/pods_admission.rs);
# image garbage collection looks every 5 s, not 5 min (e2e/tests/images_gc.rs).
agent_start() {
  local i="$1" name; name="$(node_name "$1")"
  local pidfile="$NCF_RUN/agent-$name.pid"
  pid_alive "$pidfile" && return 0
  [ -e "/var/run/netns/$name" ] || die "node $name is not up"
  mkdir -p "$NCF_RUN" "$NC_LOGS"
  RUST_LOG="${RUST_LOG:-info}" setsid nsenter --net="/var/run/netns/$name" "$(nodeconfig_bin node-agent)" \
    --node-name "$name" --kubeconfig "$NC_STATE/$name.kubeconfig" \
    --cri-endpoint "unix://$(node_cri_socket "$i")" --mode kubelet \
    --listen "$(node_ip "$i"):10356" --node-ip "$(node_ip "$i")" \
    --root-dir "$(node_dir "$i")/agent" --pod-logs-dir "$(node_dir "$i")/pod-logs" \
    --client-ca-file "$NC_STATE/pki/ca.crt" --allowed-unsafe-sysctls net.core.somaxconn \
    --image-gc-period 5s \
    >>"$NC_LOGS/agent-$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$pidfile"
}

agent_stop() { stop_pidfile "$NCF_RUN/agent-$(node_name "$1").pid"; }
agent_kill() {
  local f; f="$NCF_RUN/agent-$(node_name "$1").pid"
  [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; rm -f "$f"
}

# The nodes' image filesystem is the host's disk, as full as the host's is
# (often past the kubelet's 85 %): image garbage collection would remove the
# harness's images, which no registry serves (nodeconfig.local/*), between
# tests. It is off on every node (imageGCHighThresholdPercent 100; the
# operator's defaults do not set the field, so this per-node edit stays);
# e2e/tests/images_gc.rs turns it on for one node and off again. Until the
# patch lands no image is collected: each is first seen by the agent as it
# starts, two minutes (imageMinimumGCAge) before it may go.
nodeconfig_image_gc_off() {
  local i name
  for i in $(seq 1 "$NC_NODES"); do
    name="$(node_name "$i")"
    wait_for 60 "the NodeConfig of $name" "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" get nodeconfig "$name" ||
      die "the operator made no NodeConfig for $name"
    "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" patch nodeconfig "$name" --type=merge \
      -p '{"spec":{"pods":{"imageGCHighThresholdPercent":100}}}' >/dev/null ||
      die "turning image garbage collection off on $name failed"
  done
}

nodeconfig_up() {
  local i n
  nodeconfig_build
  images_build_nodeconfig "$(dirname "$(nodeconfig_bin node-agent)")" || die "building the images of node-agent and nodeconfig-operator failed"
  for i in $(seq 1 "$NC_NODES"); do images_import "$i" || die "importing the nodeconfig images into $(node_name "$i") failed"; done
  nodeconfig_credentials
  nodeconfig_manifests
  for n in $(seq 1 "$NC_OPERATOR_REPLICAS"); do operator_start "$n"; done
  for i in $(seq 1 "$NC_NODES"); do agent_start "$i"; done
  for n in $(seq 1 "$NC_OPERATOR_REPLICAS"); do
    await_health "operator-$n" "http://127.0.0.1:1808$n/healthz" "$NC_LOGS/operator-$n.log" "$NCF_RUN/operator-$n.pid"
  done
  for i in $(seq 1 "$NC_NODES"); do
    await_health "agent on $(node_name "$i")" "http://$(node_ip "$i"):10356/healthz" \
      "$NC_LOGS/agent-$(node_name "$i").log" "$NCF_RUN/agent-$(node_name "$i").pid"
  done
  nodeconfig_image_gc_off
}

await_health() {
  local what="$1" url="$2" logfile="$3" pidfile="$4"
  if ! wait_for 60 "$what" curl -fsS --max-time 2 "$url"; then
    pid_alive "$pidfile" || die "$what exited during start-up; see $logfile: $(tail -n 3 "$logfile" | tr '\n' ' ' | cut -c1-400)"
    die "$what did not answer $url within 60s; see $logfile"
  fi
}

nodeconfig_down() {
  local f
  for f in "$NCF_RUN"/*.pid; do [ -f "$f" ] && stop_pidfile "$f"; done
  rm -rf "$NCF_RUN"
}

nodeconfig_status() {
  local f name
  for f in "$NCF_RUN"/*.pid; do
    [ -f "$f" ] || continue
    name="$(basename "$f" .pid)"
    if pid_alive "$f"; then printf '%-26s running (pid %s)\n' "$name" "$(cat "$f")"; else printf '%-26s stopped\n' "$name"; fi
  done
  if pid_alive "$CP_RUN/kube-apiserver.pid"; then
    "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" get nodes 2>/dev/null || true
    "$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" get nodeconfigs 2>/dev/null || true
  fi
}
