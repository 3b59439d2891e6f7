# The control plane of the local cluster: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler of the pinned version, with
# certificates and kubeconfigs generated per cluster. Sourced by e2e/cluster.

PKI="$NC_STATE/pki"
CP_RUN="$NC_RUN/control-plane"

# --- certificates ----------------------------------------------------------

# Creates a self-signed CA unless it exists.
#   issue_ca NAME "CN"
issue_ca() {
  [ -f "$PKI/$1.crt" ] && return 0
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -days 365 -sha256 \
    -subj "/CN=$2" -out "$PKI/$1.crt" 2>/dev/null || die "openssl could not create the CA $1 in $PKI"
}

# Issues a key and certificate signed by the cluster CA (or the CA named last).
#   issue_cert NAME "CN" "O or empty" "SANs or empty" client|server [CA]
issue_cert() {
  local name="$1" cn="$2" org="$3" sans="$4" usage="$5" ca="${6:-ca}" subj ext
  [ -f "$PKI/$name.crt" ] && return 0
  subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ "$usage" = server ]; then echo "extendedKeyUsage=serverAuth"; else echo "extendedKeyUsage=clientAuth"; fi
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" \
    -out "$PKI/$name.csr" 2>/dev/null || die "openssl could not create the key of $name in $PKI"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null \
    || die "openssl could not sign the certificate of $name in $PKI"
  rm -f "$PKI/$name.csr" "$ext"
}

# Writes a kubeconfig for a client certificate.
write_kubeconfig() {
  local file="$1" user="$2" cert="$3"
  cat > "$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: nodeconfig-e2e
  cluster:
    server: https://$NC_API_IP:$NC_API_PORT
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 < "$PKI/$cert.key")
contexts:
- name: $user@nodeconfig-e2e
  context: {cluster: nodeconfig-e2e, user: $user}
current-context: $user@nodeconfig-e2e
KUBECONFIG
  chmod 600 "$file"
}

pki_up() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  issue_ca ca nodeconfig-e2e-ca
  # The aggregation layer's own CA, as kubeadm makes it: the API server
  # proxies to extension API servers with the front-proxy client certificate,
  # which they trust through extension-apiserver-authentication.
  issue_ca front-proxy-ca nodeconfig-e2e-front-proxy-ca
  issue_cert front-proxy-client front-proxy-client "" "" client front-proxy-ca
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null && openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null \
      || die "openssl could not create the service-account signing key in $PKI"
  fi
  issue_cert apiserver kube-apiserver "" \
    "IP:$NC_API_IP,IP:$NC_KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost" server
  issue_cert apiserver-kubelet-client kube-apiserver-kubelet-client "system:masters" "" client
  issue_cert admin nodeconfig-admin "system:masters" "" client
  issue_cert controller-manager system:kube-controller-manager "" "" client
  issue_cert scheduler system:kube-scheduler "" "" client
  write_kubeconfig "$NC_KUBECONFIG" admin admin
  write_kubeconfig "$NC_STATE/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  write_kubeconfig "$NC_STATE/scheduler.kubeconfig" system:kube-scheduler scheduler
  local i name
  for i in $(seq 1 "$NC_NODES"); do
    name="$(node_name "$i")"
    issue_cert "node-$name" "system:node:$name" "system:nodes" "" client
    write_kubeconfig "$NC_STATE/$name.kubeconfig" "system:node:$name" "node-$name"
  done
}

# --- processes ---------------------------------------------------------------

# Starts a component in the background, detached from this shell, unless it runs.
start_component() {
  local name="$1"; shift
  local pidfile="$CP_RUN/$name.pid"
  pid_alive "$pidfile" && return 0
  mkdir -p "$CP_RUN" "$NC_LOGS"
  setsid "$@" >>"$NC_LOGS/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$pidfile"
}

# Waits for a component's health endpoint; on failure prints where to look.
await_component() {
  local name="$1" timeout="$2"; shift 2
  if ! wait_for "$timeout" "$name" "$@"; then
    pid_alive "$CP_RUN/$name.pid" || die "$name exited during start-up; see $NC_LOGS/$name.log: $(tail -n 3 "$NC_LOGS/$name.log" | tr '\n' ' ' | cut -c1-400)"
    die "$name did not become healthy within ${timeout}s; see $NC_LOGS/$name.log"
  fi
}

healthz() { curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$1"; }

controlplane_up() {
  require_cmds openssl curl ss setsid
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$K8S_BIN/$c" ] || die "$c $K8S_VERSION is not built in $K8S_BIN (run e2e/scripts/build-control-plane.sh)"
  done
  [ -x "$ETCD_BIN/etcd" ] || die "etcd $ETCD_VERSION is not built in $ETCD_BIN (run e2e/scripts/build-control-plane.sh)"

  # The API server's address lives on loopback, so node namespaces reach it
  # through their route to the host and nothing listens on an outside address.
  ip -4 addr show dev lo | grep -q " $NC_API_IP/" || ip addr add "$NC_API_IP/32" dev lo \
    || die "cannot add $NC_API_IP to lo for the API server"

  pid_alive "$CP_RUN/etcd.pid" || {
    require_free_port 127.0.0.1 "$NC_ETCD_PORT" etcd
    require_free_port 127.0.0.1 "$NC_ETCD_PEER_PORT" "etcd peers"
  }
  mkdir -p "$NC_STATE/etcd"
  chmod 700 "$NC_STATE/etcd"
  start_component etcd "$ETCD_BIN/etcd" --name nodeconfig-e2e --data-dir "$NC_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$NC_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$NC_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$NC_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$NC_ETCD_PEER_PORT" \
    --initial-cluster "nodeconfig-e2e=http://127.0.0.1:$NC_ETCD_PEER_PORT" --listen-metrics-urls "" \
    --unsafe-no-fsync --log-level warn
  await_component etcd 30 curl -fsS --max-time 2 "http://127.0.0.1:$NC_ETCD_PORT/health"

  pid_alive "$CP_RUN/kube-apiserver.pid" || require_free_port "$NC_API_IP" "$NC_API_PORT" kube-apiserver
  start_component kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$NC_ETCD_PORT" \
    --bind-address "$NC_API_IP" --advertise-address "$NC_API_IP" --secure-port "$NC_API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
    --service-cluster-ip-range "$NC_SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --profiling=false --v=1
  await_component kube-apiserver 90 healthz "https://$NC_API_IP:$NC_API_PORT/readyz"

  pid_alive "$CP_RUN/kube-controller-manager.pid" || require_free_port 127.0.0.1 "$NC_KCM_PORT" kube-controller-manager
  start_component kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$NC_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$NC_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$NC_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$NC_KCM_PORT" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true --leader-elect=false --profiling=false --v=1
  pid_alive "$CP_RUN/kube-scheduler.pid" || require_free_port 127.0.0.1 "$NC_SCHED_PORT" kube-scheduler
  start_component kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$NC_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$NC_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$NC_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$NC_SCHED_PORT" --leader-elect=false --profiling=false --v=1
  await_component kube-controller-manager 60 curl -fsSk --max-time 2 "https://127.0.0.1:$NC_KCM_PORT/healthz"
  await_component kube-scheduler 60 curl -fsSk --max-time 2 "https://127.0.0.1:$NC_SCHED_PORT/healthz"
}

controlplane_down() {
  local c
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_pidfile "$CP_RUN/$c.pid"
  done
  if ip -4 addr show dev lo 2>/dev/null | grep -q " $NC_API_IP/"; then
    ip addr del "$NC_API_IP/32" dev lo || true
  fi
  rm -rf "$CP_RUN"
}

controlplane_status() {
  local c state
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    if pid_alive "$CP_RUN/$c.pid"; then state="running (pid $(cat "$CP_RUN/$c.pid"))"; else state="stopped"; fi
    printf '%-26s %s\n' "$c" "$state"
  done
  if pid_alive "$CP_RUN/kube-apiserver.pid"; then
    printf '%-26s %s\n' "server version" "$("$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG" version -o json 2>/dev/null | jq -r '.serverVersion.gitVersion // "unreachable"')"
    printf '%-26s %s\n' "api server" "https://$NC_API_IP:$NC_API_PORT"
    printf '%-26s %s\n' "kubeconfig" "$NC_KUBECONFIG"
  fi
}
