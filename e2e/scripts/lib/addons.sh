# What a cluster has besides its control plane and nodes, as a real one would:
# an image registry on the host that every node's containerd pulls from, the
# upstream e2e suite's images in it, cluster DNS (CoreDNS in kube-system,
# installed as kubeadm installs it) and the resource metrics API (metrics-server
# in kube-system, as its release manifest installs it). Sourced after
# common.sh, images.sh and controlplane.sh.
#
#   addons_up      builds what is missing (registry, CoreDNS, metrics-server and
#                  their images), starts the registry on $NC_REGISTRY, pushes,
#                  applies CoreDNS and metrics-server
#   addons_suite_images   builds the e2e suite's images and pushes them
#   addons_down    stops the registry (its storage goes with $NC_STATE)
#   addons_status  one line for the registry
#
# Images are built like images.sh's: one deterministic layer, from local
# binaries and Debian's packages (the binary and the shared libraries it
# links), never pulled from a public registry. The suite finds them through
# KUBE_TEST_REPO_LIST (conformance_repo_list writes it), under the same names
# and tags it would pull from registry.k8s.io.

# shellcheck source=../conformance.env
source "$(dirname "${BASH_SOURCE[0]}")/../conformance.env"

ADDONS_RUN="$NC_RUN/addons"
CONF_BIN="$NC_CACHE/conformance-$K8S_VERSION/bin"          # e2e.test, ginkgo, agnhost
REGISTRY_BIN="$NC_CACHE/registry-$REGISTRY_VERSION/bin/registry"
COREDNS_BIN="$NC_CACHE/coredns-$COREDNS_VERSION/bin/coredns"
METRICS_SERVER_BIN="$NC_CACHE/metrics-server-$METRICS_SERVER_VERSION/bin/metrics-server"
BUSYBOX_BIN="$NC_CACHE/busybox-$BUSYBOX_VERSION/bin/busybox"  # upstream BusyBox (the suite's busybox image)
CONF_IMAGES="$NC_CACHE/images-conformance"                  # OCI archives of the suite's images
CONF_DEBS="$NC_CACHE/debs"                                   # .debs unpacked, not installed (nginx)
_ADDONS_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
_ADDONS_E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Where the suite's registries point (KUBE_TEST_REPO_LIST). The invalid one is
# a port of this host where nothing listens: a pull from it fails for real and
# no packet leaves the machine. The private one is served but holds nothing.
CONF_E2E_REGISTRY="$NC_REGISTRY/e2e-test-images"
CONF_IMAGE_COREDNS="$NC_REGISTRY/coredns/coredns:$COREDNS_VERSION"
CONF_IMAGE_METRICS_SERVER="$NC_REGISTRY/metrics-server/metrics-server:$METRICS_SERVER_VERSION"

conformance_repo_list() {
  cat <<EOF
promoterE2eRegistry: $CONF_E2E_REGISTRY
buildImageRegistry: $NC_REGISTRY/build-image
invalidRegistry: $NC_API_IP:5001/invalid
gcEtcdRegistry: $NC_REGISTRY
gcRegistry: $NC_REGISTRY
sigStorageRegistry: $NC_REGISTRY/sig-storage
privateRegistry: $NC_REGISTRY/k8s-authenticated-test
dockerLibraryRegistry: $NC_REGISTRY/library
cloudProviderGcpRegistry: $NC_REGISTRY/cloud-provider-gcp
EOF
}

# ---------------------------------------------------------------- image rootfs

# Copies binaries and the shared libraries they link into a rootfs.
_addons_copy_bins() {
  local root="$1" b lib; shift
  for b in "$@"; do
    mkdir -p "$root$(dirname "$b")"
    cp -L "$b" "$root$b" || return 1
    for lib in $(ldd "$b" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*'); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib" || return 1
    done
  done
}

_addons_base_root() {
  local root="$1"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,tmp,var/tmp,dev,proc,sys,run}
  chmod 0755 "$root" "$root"/{bin,sbin,usr,usr/bin,usr/sbin,usr/local,usr/local/bin,etc,var,dev,proc,sys,run}
  chmod 0700 "$root/root"; chmod 1777 "$root/tmp" "$root/var/tmp"
}

# busybox-static and its applets (the suite's busybox image is busybox).
_addons_busybox_into() {
  local root="$1" p
  install -m 0755 /bin/busybox "$root/bin/busybox"
  for p in $(busybox --list-full); do
    [ "$p" = bin/busybox ] || [ -e "$root/$p" ] || ln -sfn /bin/busybox "$root/$p"
  done
}

# Unpacks Debian packages (downloaded, not installed: nginx would start a
# service on the host) into $CONF_DEBS/<pkg>_<version>; prints that directory.
#   _addons_deb PKG [MORE PKGS...]   (the first one names the directory)
_addons_deb() {
  local pkg="$1" ver dir f
  ver="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || { log "addons: Debian has no package $pkg (apt-get update?)"; return 1; }
  dir="$CONF_DEBS/${pkg}_${ver//:/%}"
  if [ ! -d "$dir/root" ]; then
    rm -rf "$dir"; mkdir -p "$dir/dl"
    (cd "$dir/dl" && apt-get download -q "$@" >/dev/null 2>&1) || { log "addons: apt-get download $* failed"; return 1; }
    mkdir -p "$dir/root.tmp"
    for f in "$dir"/dl/*.deb; do dpkg-deb -x "$f" "$dir/root.tmp" || return 1; done
    mv "$dir/root.tmp" "$dir/root"; rm -rf "$dir/dl"
  fi
  echo "$dir/root"
}

# Debian packages whose programs go into the images; installed on the host
# when missing (none of them runs a service).
_ADDONS_HOST_PKGS=(bind9-dnsutils netcat-openbsd socat iperf curl iproute2 util-linux bash dash libc-bin)
_addons_host_pkgs() {
  local missing=() p
  for p in "${_ADDONS_HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "addons: installing Debian packages ${missing[*]} (tools of the agnhost image)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# The upstream agnhost image: the binary as entrypoint (`pause` by default), an
# agnhost-2 link, /uploads, porter's certificate, coredns, the tools its tests
# call (sh as dash, bash, curl, dig/nslookup, getent, nc, ip/ss, socat, iperf, ipcs), and user
# 1000 in group 50000 (user-defined-in-image / group-defined-in-image).
_addons_root_agnhost() {
  local root="$1" src="$NC_CACHE/conformance-$K8S_VERSION/src" porter
  _addons_base_root "$root"
  _addons_busybox_into "$root"
  install -m 0755 "$CONF_BIN/agnhost" "$root/agnhost"
  ln -s agnhost "$root/agnhost-2"
  install -m 0755 "$COREDNS_BIN" "$root/coredns"
  mkdir -p "$root/uploads"
  porter="$(cd "$src" && go list -f '{{.Dir}}' k8s.io/kubernetes/test/images/agnhost/porter 2>/dev/null)"
  [ -n "$porter" ] && install -m 0644 "$porter/localhost.crt" "$porter/localhost.key" "$root/"
  # Debian's programs replace busybox's applets of the same name.
  local b bins=()
  for b in /usr/bin/dash /usr/bin/bash /usr/bin/curl /usr/bin/dig /usr/bin/nslookup /usr/bin/host /usr/bin/nc.openbsd \
           /usr/bin/getent /usr/bin/socat /usr/bin/iperf /usr/bin/ipcs /usr/sbin/ip /usr/bin/ss; do
    [ -x "$b" ] || { log "addons: $b missing (Debian package not installed)"; return 1; }
    bins+=("$b")
  done
  for b in bash curl dig nslookup host nc.openbsd socat iperf ipcs ss; do rm -f "$root/usr/bin/$b" "$root/bin/$b"; done
  rm -f "$root/usr/sbin/ip" "$root/sbin/ip" "$root/bin/ip"
  _addons_copy_bins "$root" "${bins[@]}" || return 1
  ln -sfn /usr/bin/nc.openbsd "$root/usr/bin/nc"; rm -f "$root/bin/nc"
  ln -sfn /usr/sbin/ip "$root/sbin/ip"
  ln -sfn /usr/bin/iperf "$root/usr/local/bin/iperf"
  ln -sfn /usr/bin/bash "$root/bin/bash"
  # Debian's busybox-static runs its own applets before $PATH (standalone
  # shell), so its sh would call busybox's nc instead of netcat-openbsd. The
  # image's sh is dash, which looks commands up in $PATH as alpine's sh does.
  ln -sfn /usr/bin/dash "$root/bin/sh"
  mkdir -p "$root/etc/ssl/certs"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
user-defined-in-image:x:1000:
group-defined-in-image:x:50000:user-defined-in-image
EOF
  mkdir -p "$root/home/user-defined-in-image"; chown 1000:1000 "$root/home/user-defined-in-image"
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
}

# The upstream glibc-dns-testing image is Debian with dnsutils (and coredns):
# Debian's dig/nslookup/host and getent (the DNS tests' /etc/hosts lookups) with
# glibc, dash as sh; busybox for the rest.
_addons_root_glibc_dns() {
  local root="$1" b
  _addons_base_root "$root"; _addons_busybox_into "$root"
  for b in dig nslookup host; do rm -f "$root/usr/bin/$b" "$root/bin/$b"; done
  _addons_copy_bins "$root" /usr/bin/dash /usr/bin/bash /usr/bin/dig /usr/bin/nslookup /usr/bin/host /usr/bin/getent || return 1
  ln -sfn /usr/bin/dash "$root/bin/sh"; ln -sfn /usr/bin/bash "$root/bin/bash"
  install -m 0755 "$COREDNS_BIN" "$root/coredns"
  printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
}

# The upstream busybox image: BusyBox built from its release with defconfig
# (build-conformance.sh busybox), every applet in /bin (the suite calls
# /bin/sysctl, for one). Not Debian's busybox: its ash drops environment
# variables whose names are not identifiers.
_addons_root_busybox() {
  local p
  _addons_base_root "$1"
  install -m 0755 "$BUSYBOX_BIN" "$1/bin/busybox"
  for p in $("$BUSYBOX_BIN" --list); do [ -e "$1/bin/$p" ] || ln -s busybox "$1/bin/$p"; done
  install -m 0644 "$_NC_IMAGES_SRC/busybox/etc/passwd" "$1/etc/passwd"
  install -m 0644 "$_NC_IMAGES_SRC/busybox/etc/group" "$1/etc/group"
}

# nginx from Debian's package, configured as the official image is: the default
# server on :80 serving /usr/share/nginx/html, logs to the container's output.
_addons_root_nginx() {
  local root="$1" deb
  deb="$(_addons_deb nginx nginx-common)" || return 1
  _addons_base_root "$root"; _addons_busybox_into "$root"
  mkdir -p "$root/usr/sbin" "$root/etc/nginx/conf.d" "$root/usr/share/nginx/html" "$root/var/log/nginx" \
    "$root/var/cache/nginx" "$root/var/lib/nginx/body" "$root/usr/lib/nginx/modules"
  cp "$deb/usr/sbin/nginx" "$root/usr/sbin/nginx" || return 1
  local lib
  for lib in $(ldd "$deb/usr/sbin/nginx" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib" || return 1
  done
  cp "$deb/etc/nginx/mime.types" "$root/etc/nginx/" || return 1
  cp "$deb/usr/share/nginx/html/index.html" "$root/usr/share/nginx/html/index.html" || return 1
  ln -sfn /dev/stdout "$root/var/log/nginx/access.log"
  ln -sfn /dev/stderr "$root/var/log/nginx/error.log"
  cat >"$root/etc/nginx/nginx.conf" <<'EOF'
user nginx;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
EOF
  cat >"$root/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen 80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
}
EOF
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nginx:x:101:101:nginx user:/nonexistent:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  printf 'root:x:0:\nnginx:x:101:\nnogroup:x:65534:\n' >"$root/etc/group"
}

# The aggregator test's sample-apiserver (upstream: the binary on alpine).
_addons_root_sample_apiserver() {
  _addons_base_root "$1"; _addons_busybox_into "$1"
  install -m 0755 "$CONF_BIN/sample-apiserver" "$1/sample-apiserver"
}

# etcd for the sample-apiserver's pod: the control plane's etcd at
# /usr/local/bin/etcd, where the test's command calls it.
_addons_root_etcd() {
  _addons_base_root "$1"; _addons_busybox_into "$1"
  install -m 0755 "$ETCD_BIN/etcd" "$1/usr/local/bin/etcd"
}

# nonewprivs: a setuid-root program printing its effective uid (upstream:
# alpine with /usr/local/bin/nnp, chmod +s).
_addons_root_nonewprivs() {
  _addons_root_busybox "$1"
  install -m 4755 "$CONF_BIN/nnp" "$1/usr/local/bin/nnp"
}

# The kubectl Update Demo's kitten and nautilus: the agnhost image serving a
# picture and its data.json from / (test-webserver), as upstream builds them.
_addons_root_update_demo() {
  local root="$1" what="$2" html
  html="$(cd "$NC_CACHE/conformance-$K8S_VERSION/src" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images/$what/html"
  _addons_root_agnhost "$root" || return 1
  install -m 0644 "$html/data.json" "$html/$what.jpg" "$root/" || return 1
}
_addons_root_kitten() { _addons_root_update_demo "$1" kitten; }
_addons_root_nautilus() { _addons_root_update_demo "$1" nautilus; }

_addons_root_pause() {
  chmod 0755 "$1"
  gcc -static -Os -s -Wall -Wextra -o "$1/pause" "$_NC_IMAGES_SRC/pause.c" || return 1
}

_addons_root_coredns() {
  local root="$1"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp"; chmod 0755 "$root"; chmod 1777 "$root/tmp"
  install -m 0755 "$COREDNS_BIN" "$root/coredns"
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
}

# metrics-server as upstream's image: the binary on distroless/static (no
# shell; passwd with nobody and nonroot, /tmp), run as nobody.
_addons_root_metrics_server() {
  local root="$1"
  mkdir -p "$root/etc/ssl/certs" "$root/tmp"; chmod 0755 "$root"; chmod 1777 "$root/tmp"
  install -m 0755 "$METRICS_SERVER_BIN" "$root/metrics-server"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
}

# name|reference|rootfs function|image config
#   _addons_images cluster   what the cluster itself runs (CoreDNS, metrics-server)
#   _addons_images suite     what the e2e suite's tests run
_addons_images() {
  local e="$CONF_E2E_REGISTRY" path='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
  if [ "$1" = cluster ]; then
    echo "coredns|$CONF_IMAGE_COREDNS|_addons_root_coredns|{\"Entrypoint\":[\"/coredns\"],\"ExposedPorts\":{\"53/tcp\":{},\"53/udp\":{}},\"User\":\"0:0\",\"WorkingDir\":\"/\"}"
    echo "metrics-server|$CONF_IMAGE_METRICS_SERVER|_addons_root_metrics_server|{\"Entrypoint\":[\"/metrics-server\"],\"User\":\"65534\",\"WorkingDir\":\"/\"}"
    return
  fi
  cat <<EOF
agnhost|$e/agnhost:2.66.1|_addons_root_agnhost|{$path,"Entrypoint":["/agnhost"],"Cmd":["pause"],"WorkingDir":"/","ExposedPorts":{"80/tcp":{},"8080/tcp":{},"8081/tcp":{},"9376/tcp":{},"5000/tcp":{}}}
agnhost|$e/agnhost:2.55|_addons_root_agnhost|{$path,"Entrypoint":["/agnhost"],"Cmd":["pause"],"WorkingDir":"/","ExposedPorts":{"80/tcp":{},"8080/tcp":{},"8081/tcp":{},"9376/tcp":{},"5000/tcp":{}}}
busybox|$e/busybox:1.37.0-2|_addons_root_busybox|{$path,"Cmd":["sh"],"WorkingDir":"/"}
busybox|$e/busybox:1.36.1-1|_addons_root_busybox|{$path,"Cmd":["sh"],"WorkingDir":"/"}
glibc-dns|$e/glibc-dns-testing:2.1.1|_addons_root_glibc_dns|{$path,"Cmd":["bash"],"WorkingDir":"/"}
nonroot|$e/nonroot:1.5|_addons_root_busybox|{$path,"Cmd":["sh"],"User":"1234","WorkingDir":"/"}
nginx|$e/nginx:1.27.0-2|_addons_root_nginx|{$path,"Cmd":["nginx","-g","daemon off;"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT","WorkingDir":"/"}
nginx|$e/nginx:1.28.0-2|_addons_root_nginx|{$path,"Cmd":["nginx","-g","daemon off;"],"ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGQUIT","WorkingDir":"/"}
sample-apiserver|$e/sample-apiserver:1.29.2|_addons_root_sample_apiserver|{$path,"Entrypoint":["/sample-apiserver"],"WorkingDir":"/"}
etcd|$NC_REGISTRY/etcd:3.7.0-0|_addons_root_etcd|{$path,"WorkingDir":"/"}
nonewprivs|$e/nonewprivs:1.4|_addons_root_nonewprivs|{$path,"Cmd":["nnp"],"WorkingDir":"/"}
kitten|$e/kitten:1.8|_addons_root_kitten|{$path,"Entrypoint":["/agnhost"],"Cmd":["test-webserver"],"WorkingDir":"/","ExposedPorts":{"80/tcp":{}}}
nautilus|$e/nautilus:1.8|_addons_root_nautilus|{$path,"Entrypoint":["/agnhost"],"Cmd":["test-webserver"],"WorkingDir":"/","ExposedPorts":{"80/tcp":{}}}
pause|$NC_REGISTRY/pause:3.10.2|_addons_root_pause|{"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"}
EOF
}

# Hash of what an image is built from (this script, its binaries, the Debian
# packages' versions); the archive is rebuilt when it changes.
_addons_inputs_hash() {
  local name="$1" ref="$2" cfg="$3"
  {
    echo "$ref $cfg"; sha256sum <"$_ADDONS_SCRIPT"; sha256sum </bin/busybox
    case "$name" in
      agnhost|kitten|nautilus) sha256sum <"$CONF_BIN/agnhost"; sha256sum <"$COREDNS_BIN"
               dpkg-query -W "${_ADDONS_HOST_PKGS[@]}" 2>/dev/null ;;
      sample-apiserver) sha256sum <"$CONF_BIN/sample-apiserver" ;;
      etcd) sha256sum <"$ETCD_BIN/etcd" ;;
      nonewprivs) sha256sum <"$CONF_BIN/nnp"; sha256sum <"$BUSYBOX_BIN" ;;
      busybox|nonroot) sha256sum <"$BUSYBOX_BIN" ;;
      glibc-dns) sha256sum <"$COREDNS_BIN"; dpkg-query -W "${_ADDONS_HOST_PKGS[@]}" 2>/dev/null ;;
      nginx) apt-cache policy nginx 2>/dev/null | awk '/Candidate:/ {print $2}' ;;
      pause) sha256sum <"$_NC_IMAGES_SRC/pause.c" ;;
      coredns) sha256sum <"$COREDNS_BIN" ;;
      metrics-server) sha256sum <"$METRICS_SERVER_BIN" ;;
    esac
  } | sha256sum | cut -d' ' -f1
}

_addons_archive() { local r="${1#*/}"; echo "$CONF_IMAGES/${r//[\/:]/_}.oci.tar"; }

# _addons_images_build cluster|suite
_addons_images_build() {
  local set="$1" name ref fn cfg out hash root
  require_cmds jq tar sha256sum busybox gcc ldd apt-get dpkg-deb
  [ -x "$COREDNS_BIN" ] || { log "addons: coredns not built (e2e/scripts/build-conformance.sh coredns)"; return 1; }
  if [ "$set" = cluster ]; then
    [ -x "$METRICS_SERVER_BIN" ] || { log "addons: metrics-server not built (e2e/scripts/build-conformance.sh metrics-server)"; return 1; }
  fi
  if [ "$set" = suite ]; then
    [ -x "$CONF_BIN/agnhost" ] || { log "addons: agnhost not built (e2e/scripts/build-conformance.sh agnhost)"; return 1; }
    [ -x "$BUSYBOX_BIN" ] || { log "addons: busybox not built (e2e/scripts/build-conformance.sh busybox)"; return 1; }
    _addons_host_pkgs || { log "addons: installing the Debian packages of the agnhost image failed"; return 1; }
  fi
  mkdir -p "$CONF_IMAGES" "$NC_IMAGES"
  while IFS='|' read -r name ref fn cfg; do
    out="$(_addons_archive "$ref")"
    hash="$(_addons_inputs_hash "$name" "$ref" "$cfg")"
    _images_fresh "$out" "$hash" && continue
    log "addons: building image $ref"
    root="$(mktemp -d "$NC_IMAGES/.rootfs.XXXXXX")"
    if ! "$fn" "$root" || ! _images_pack "$ref" "$root" "$cfg" "$out"; then
      rm -rf "$root"; log "addons: building image $ref failed"; return 1
    fi
    rm -rf "$root"
    echo "$hash" >"$out.inputs"
  done < <(_addons_images "$set")
}

# ---------------------------------------------------------------- registry

_registry_url() { echo "http://$NC_REGISTRY"; }

# Pushes an OCI archive (one manifest) through the registry's HTTP API.
_registry_push() {
  local ref="$1" out="$2" dir repo tag mf d loc blob
  repo="${ref#*/}"; tag="${repo##*:}"; repo="${repo%:*}"
  dir="$(mktemp -d "$NC_IMAGES/.push.XXXXXX")"
  tar -xf "$out" -C "$dir" || { rm -rf "$dir"; return 1; }
  mf="$(jq -r '.manifests[0].digest' "$dir/index.json")"
  for d in $(jq -r '.config.digest, .layers[].digest' "$dir/blobs/sha256/${mf#sha256:}"); do
    blob="$dir/blobs/sha256/${d#sha256:}"
    curl -fsS -o /dev/null -I "$(_registry_url)/v2/$repo/blobs/$d" 2>/dev/null && continue
    loc="$(curl -fsS -X POST -D - -o /dev/null "$(_registry_url)/v2/$repo/blobs/uploads/" | awk -F': ' 'tolower($1) == "location" {print $2}' | tr -d '\r')"
    [ -n "$loc" ] || { rm -rf "$dir"; log "addons: registry refused an upload to $repo"; return 1; }
    case "$loc" in http*) ;; *) loc="$(_registry_url)$loc" ;; esac
    case "$loc" in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$blob" -o /dev/null "$loc" \
      || { rm -rf "$dir"; log "addons: pushing a blob of $ref failed"; return 1; }
  done
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$dir/blobs/sha256/${mf#sha256:}" -o /dev/null "$(_registry_url)/v2/$repo/manifests/$tag" \
    || { rm -rf "$dir"; log "addons: pushing the manifest of $ref failed"; return 1; }
  rm -rf "$dir"
}

_registry_up() {
  local dir="$NC_STATE/registry" pidfile="$ADDONS_RUN/registry.pid"
  [ -x "$REGISTRY_BIN" ] || { log "addons: registry not built (e2e/scripts/build-conformance.sh registry)"; return 1; }
  mkdir -p "$dir/data" "$ADDONS_RUN" "$NC_LOGS"
  if ! pid_alive "$pidfile"; then
    require_free_port "$NC_API_IP" "${NC_REGISTRY##*:}" registry
    cat >"$dir/config.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http:
  addr: $NC_REGISTRY
  debug: {addr: ""}
EOF
    OTEL_TRACES_EXPORTER=none setsid "$REGISTRY_BIN" serve "$dir/config.yml" >>"$NC_LOGS/registry.log" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
  fi
  wait_for 30 registry curl -fsS --max-time 2 "$(_registry_url)/v2/" ||
    { log "addons: the registry did not answer on $(_registry_url)/v2/; see $NC_LOGS/registry.log"; return 1; }
}

# _addons_push cluster|suite: pushes the images the registry does not have yet.
_addons_push() {
  local set="$1" name ref fn cfg out want have
  while IFS='|' read -r name ref fn cfg; do
    out="$(_addons_archive "$ref")"
    want="$(cat "$out.digest")"
    have="$(curl -fsS -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "$(_registry_url)/v2/$(r="${ref#*/}"; echo "${r%:*}")/manifests/${ref##*:}" 2>/dev/null |
      awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}' | tr -d '\r')"
    [ "$have" = "$want" ] && continue
    _registry_push "$ref" "$out" || return 1
  done < <(_addons_images "$set")
}

# ---------------------------------------------------------------- CoreDNS

_coredns_apply() {
  local kc=("$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG")
  sed -e "s|@IMAGE@|$CONF_IMAGE_COREDNS|" -e "s|@DNS_IP@|$NC_DNS_IP|" "$_ADDONS_E2E/manifests/coredns/coredns.yaml" |
    "${kc[@]}" apply --server-side --force-conflicts -f - >/dev/null || { log "addons: applying CoreDNS failed"; return 1; }
}

_coredns_wait() {
  local kc=("$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG")
  if ! "${kc[@]}" -n kube-system rollout status deployment/coredns --timeout="${NODECONFIG_DNS_TIMEOUT:-120}s" >/dev/null 2>&1; then
    log "addons: warning: CoreDNS is not Ready: $("${kc[@]}" -n kube-system get pods -l k8s-app=kube-dns --no-headers 2>&1 | tr -s ' ' | tr '\n' ';')"
  fi
}

# ---------------------------------------------------------------- metrics-server

_metrics_server_apply() {
  local kc=("$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG")
  sed -e "s|@IMAGE@|$CONF_IMAGE_METRICS_SERVER|" "$_ADDONS_E2E/manifests/metrics-server/metrics-server.yaml" |
    "${kc[@]}" apply --server-side --force-conflicts -f - >/dev/null || { log "addons: applying metrics-server failed"; return 1; }
}

# Waits for the APIService to be Available: until then every client's
# discovery of metrics.k8s.io fails, and the namespace controller keeps
# namespaces Terminating (it cannot list what they hold).
_metrics_server_wait() {
  local kc=("$K8S_BIN/kubectl" --kubeconfig "$NC_KUBECONFIG")
  if ! "${kc[@]}" wait apiservice/v1beta1.metrics.k8s.io --for=condition=Available \
      --timeout="${NODECONFIG_METRICS_SERVER_TIMEOUT:-120}s" >/dev/null 2>&1; then
    log "addons: warning: metrics.k8s.io is not Available: $("${kc[@]}" get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions[0].message}' 2>&1);" \
      "pods: $("${kc[@]}" -n kube-system get pods -l k8s-app=metrics-server --no-headers 2>&1 | tr -s ' ' | tr '\n' ';')"
  fi
}

# ---------------------------------------------------------------- entry points

_addons_up() {
  "$_ADDONS_E2E/scripts/build-conformance.sh" registry coredns metrics-server || return 1
  _addons_images_build cluster || return 1
  _registry_up || return 1
  _addons_push cluster || return 1
  # Both applied first, so they start side by side.
  _coredns_apply || return 1
  _metrics_server_apply || return 1
  _coredns_wait
  _metrics_server_wait
}

# The suite's images, built and pushed into the running cluster's registry.
_addons_suite_images() {
  "$_ADDONS_E2E/scripts/build-conformance.sh" registry coredns agnhost sample-apiserver nnp busybox || return 1
  _addons_images_build suite || return 1
  _registry_up || return 1
  _addons_push suite
}

_addons_down() { stop_pidfile "$ADDONS_RUN/registry.pid"; rm -rf "$ADDONS_RUN"; true; }

_addons_status() {
  if pid_alive "$ADDONS_RUN/registry.pid"; then
    printf '%-26s running (pid %s) on %s\n' registry "$(cat "$ADDONS_RUN/registry.pid")" "$(_registry_url)"
  else
    printf '%-26s stopped\n' registry
  fi
}

_addons_isolated() { ( set +e +u +E +o pipefail; trap - ERR; "$@" ); }
addons_up()     { _addons_isolated _addons_up "$@"; }
addons_down()   { _addons_isolated _addons_down "$@"; }
addons_status() { _addons_isolated _addons_status "$@"; }
addons_suite_images() { _addons_isolated _addons_suite_images "$@"; }
