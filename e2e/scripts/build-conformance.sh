#!/usr/bin/env bash
# Builds what the upstream conformance run needs, from the Go module proxy into
# the cache folder, keyed by version (as build-control-plane.sh does for the
# control plane). Reuses what is there.
#
#   e2e/scripts/build-conformance.sh [component...]
#
# Components (default: all):
#   e2e.test  ginkgo  agnhost   k8s.io/kubernetes K8S_VERSION  -> $cache/conformance-K8S_VERSION/bin
#   sample-apiserver  nnp       (the aggregator test's server; the nonewprivs image's program)
#   registry                    distribution REGISTRY_VERSION  -> $cache/registry-REGISTRY_VERSION/bin
#   coredns                     coredns COREDNS_VERSION        -> $cache/coredns-COREDNS_VERSION/bin
#   metrics-server              metrics-server METRICS_SERVER_VERSION -> $cache/metrics-server-METRICS_SERVER_VERSION/bin
#   busybox                     BusyBox BUSYBOX_VERSION (C, defconfig, static) -> $cache/busybox-BUSYBOX_VERSION/bin
#
# e2e.test, ginkgo and agnhost build in their own module dir (not the control
# plane's, which another build may be using) with the same replace directives;
# `go get -t` brings the suite's test-only modules.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=conformance.env
source "$here/conformance.env"
# shellcheck source=lib/k8s-module.sh
source "$here/lib/k8s-module.sh"

cache="${NODECONFIG_CACHE:-/var/cache/nodeconfig}"
kdir="$cache/conformance-$K8S_VERSION"
rdir="$cache/registry-$REGISTRY_VERSION"
cdir="$cache/coredns-$COREDNS_VERSION"
mdir="$cache/metrics-server-$METRICS_SERVER_VERSION"
bdir="$cache/busybox-$BUSYBOX_VERSION"

die() { echo "build-conformance: $*" >&2; exit 1; }
say() { echo "build-conformance: $*" >&2; }
command -v go >/dev/null || die "go is not installed"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(e2e.test ginkgo agnhost sample-apiserver nnp registry coredns metrics-server busybox)

k8s_ldflags="$(k8s_ldflags)"

# The module dir for k8s.io/kubernetes: its staging modules pinned to the
# published v0.x releases, as in build-control-plane.sh.
k8s_module() {
  mkdir -p "$kdir/src" "$kdir/bin"
  cd "$kdir/src"
  [ -f go.mod ] && return 0
  k8s_write_gomod nodeconfig.local/conformance || die "cannot write the conformance module's go.mod"
  say "go get -t k8s.io/kubernetes/test/e2e $K8S_VERSION (test-only modules too)"
  go get -t "k8s.io/kubernetes@$K8S_VERSION" k8s.io/kubernetes/test/e2e k8s.io/kubernetes/test/images/agnhost \
    || { rm -f go.mod; die "go get of k8s.io/kubernetes $K8S_VERSION failed"; }
  # ginkgo's CLI at the version the suite links (its go.mod pins it).
  go get github.com/onsi/ginkgo/v2/ginkgo@"$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)" \
    || { rm -f go.mod; die "go get of the ginkgo CLI failed"; }
}

timed() { # timed NAME CMD...: run, and say how long it took
  local name="$1" t0; shift; t0=$(date +%s)
  "$@" || die "building $name failed"
  say "$name built in $(( $(date +%s) - t0 ))s"
}

for c in "${components[@]}"; do
  case "$c" in
    e2e.test)
      [ -x "$kdir/bin/e2e.test" ] && continue
      k8s_module
      say "go test -c k8s.io/kubernetes/test/e2e $K8S_VERSION (about 12 min on 2 cores)"
      timed e2e.test go test -c -trimpath -ldflags "$k8s_ldflags" -o "$kdir/bin/e2e.test.tmp" k8s.io/kubernetes/test/e2e
      mv "$kdir/bin/e2e.test.tmp" "$kdir/bin/e2e.test" ;;
    ginkgo)
      [ -x "$kdir/bin/ginkgo" ] && continue
      k8s_module
      timed ginkgo go build -trimpath -ldflags "-s -w" -o "$kdir/bin/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
      mv "$kdir/bin/ginkgo.tmp" "$kdir/bin/ginkgo" ;;
    agnhost)
      [ -x "$kdir/bin/agnhost" ] && continue
      k8s_module
      timed agnhost go build -trimpath -ldflags "$k8s_ldflags" -o "$kdir/bin/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost
      mv "$kdir/bin/agnhost.tmp" "$kdir/bin/agnhost" ;;
    sample-apiserver)
      # Upstream's image builds k8s.io/sample-apiserver from its repository;
      # the staging module of the pinned release is the same code.
      [ -x "$kdir/bin/sample-apiserver" ] && continue
      k8s_module
      go list k8s.io/sample-apiserver >/dev/null 2>&1 || go get "k8s.io/sample-apiserver@v0.${K8S_VERSION#v1.}" \
        || die "go get of k8s.io/sample-apiserver failed"
      timed sample-apiserver go build -trimpath -ldflags "$k8s_ldflags" -o "$kdir/bin/sample-apiserver.tmp" k8s.io/sample-apiserver
      mv "$kdir/bin/sample-apiserver.tmp" "$kdir/bin/sample-apiserver" ;;
    nnp)
      [ -x "$kdir/bin/nnp" ] && continue
      k8s_module
      timed nnp go build -trimpath -ldflags "-s -w" -o "$kdir/bin/nnp.tmp" k8s.io/kubernetes/test/images/nonewprivs
      mv "$kdir/bin/nnp.tmp" "$kdir/bin/nnp" ;;
    registry)
      [ -x "$rdir/bin/registry" ] && continue
      mkdir -p "$rdir/src" "$rdir/bin"; cd "$rdir/src"
      [ -f go.mod ] || printf 'module nodeconfig.local/registry\n\ngo 1.26\n' > go.mod
      go get "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION" || die "go get of distribution $REGISTRY_VERSION failed"
      timed registry go build -trimpath -ldflags "-s -w" -o "$rdir/bin/registry.tmp" github.com/distribution/distribution/v3/cmd/registry
      mv "$rdir/bin/registry.tmp" "$rdir/bin/registry" ;;
    coredns)
      [ -x "$cdir/bin/coredns" ] && continue
      mkdir -p "$cdir/src" "$cdir/bin"; cd "$cdir/src"
      [ -f go.mod ] || printf 'module nodeconfig.local/coredns\n\ngo 1.26\n' > go.mod
      go get "github.com/coredns/coredns@$COREDNS_VERSION" || die "go get of coredns $COREDNS_VERSION failed"
      timed coredns go build -trimpath -ldflags "-s -w" -o "$cdir/bin/coredns.tmp" github.com/coredns/coredns
      mv "$cdir/bin/coredns.tmp" "$cdir/bin/coredns" ;;
    metrics-server)
      # Its go.mod has no replace directives, so the module's own requirements
      # are what a module requiring it builds with.
      [ -x "$mdir/bin/metrics-server" ] && continue
      mkdir -p "$mdir/src" "$mdir/bin"; cd "$mdir/src"
      [ -f go.mod ] || printf 'module nodeconfig.local/metrics-server\n\ngo 1.26\n' > go.mod
      go get "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION" || die "go get of metrics-server $METRICS_SERVER_VERSION failed"
      timed metrics-server go build -trimpath -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
        -o "$mdir/bin/metrics-server.tmp" sigs.k8s.io/metrics-server/cmd/metrics-server
      mv "$mdir/bin/metrics-server.tmp" "$mdir/bin/metrics-server" ;;
    busybox)
      # The suite's busybox image is upstream's BusyBox built with defconfig.
      # Debian's busybox reverts upstream's ash change that passes environment
      # variables whose names are not identifiers (`data-1`) on to children;
      # the relaxed env name tests print them with `sh -c env`.
      [ -x "$bdir/bin/busybox" ] && continue
      rm -rf "$bdir/src"; mkdir -p "$bdir/src" "$bdir/bin"; cd "$bdir/src"
      curl -fsSL -o busybox.tar.bz2 "$BUSYBOX_URL" || die "download of $BUSYBOX_URL failed"
      echo "$BUSYBOX_SHA256  busybox.tar.bz2" | sha256sum -c --quiet - || die "busybox tarball checksum mismatch"
      tar -xjf busybox.tar.bz2 && cd "busybox-$BUSYBOX_VERSION" || die "cannot unpack busybox"
      make -s defconfig >/dev/null || die "busybox defconfig failed"
      sed -i -e 's/^# CONFIG_STATIC is not set$/CONFIG_STATIC=y/' .config
      grep -q '^CONFIG_STATIC=y$' .config || die "busybox: CONFIG_STATIC not set"
      timed busybox make -s -j"$(nproc)" busybox >/dev/null 2>"$bdir/src/build.log"
      install -m 0755 busybox "$bdir/bin/busybox.tmp" && mv "$bdir/bin/busybox.tmp" "$bdir/bin/busybox"
      cd "$bdir" && rm -rf "$bdir/src" ;;
    *) die "unknown component '$c'" ;;
  esac
done
say "ready: $kdir/bin $rdir/bin $cdir/bin $mdir/bin $bdir/bin"
