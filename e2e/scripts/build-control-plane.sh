#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane (and etcd) from the Go module proxy
# into a cache folder outside the repo, keyed by version. Reuses what is there.
#
#   e2e/scripts/build-control-plane.sh [component...]
#
# Components: kube-apiserver kube-controller-manager kube-scheduler kubectl
#             kube-proxy kubelet etcd   (default: the control plane and kubectl)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=lib/k8s-module.sh
source "$here/lib/k8s-module.sh"

cache="${NODECONFIG_CACHE:-/var/cache/nodeconfig}"
bindir="$cache/k8s-$K8S_VERSION/bin"
etcddir="$cache/etcd-$ETCD_VERSION/bin"
mkdir -p "$bindir" "$etcddir"

components=("$@")
if [ ${#components[@]} -eq 0 ]; then
  components=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)
fi

die() { echo "build-control-plane: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not installed (needed to build Kubernetes $K8S_VERSION)"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

k8s_pkgs=()
for c in "${components[@]}"; do
  case "$c" in
    etcd) [ -x "$etcddir/etcd" ] || want_etcd=1 ;;
    kubectl) [ -x "$bindir/kubectl" ] || k8s_pkgs+=("k8s.io/kubernetes/cmd/kubectl") ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|kubelet)
      [ -x "$bindir/$c" ] || k8s_pkgs+=("k8s.io/kubernetes/cmd/$c") ;;
    *) die "unknown component '$c'" ;;
  esac
done

if [ ${#k8s_pkgs[@]} -gt 0 ]; then
  work="$cache/k8s-$K8S_VERSION/src"
  mkdir -p "$work"
  cd "$work"
  if [ ! -f go.mod ]; then
    k8s_write_gomod nodeconfig.local/controlplane || die "cannot write the control plane's go.mod"
  fi
  echo "build-control-plane: building ${k8s_pkgs[*]##*/} $K8S_VERSION into $bindir" >&2
  go get "${k8s_pkgs[@]/%/@none}" >/dev/null 2>&1 || true
  go get "k8s.io/kubernetes@$K8S_VERSION" "${k8s_pkgs[@]}" \
    || die "go get of k8s.io/kubernetes $K8S_VERSION failed (is the Go module proxy reachable?)"
  ldflags="$(k8s_ldflags)"
  tmpbin="$(mktemp -d "$cache/k8s-$K8S_VERSION/tmpbin.XXXX")"
  go build -trimpath -ldflags "$ldflags" -o "$tmpbin/" "${k8s_pkgs[@]}" \
    || die "go build of ${k8s_pkgs[*]##*/} $K8S_VERSION failed"
  mv "$tmpbin"/* "$bindir/"
  rmdir "$tmpbin"
fi

if [ "${want_etcd:-0}" = 1 ]; then
  work="$cache/etcd-$ETCD_VERSION/src"
  mkdir -p "$work"
  cd "$work"
  [ -f go.mod ] || printf 'module nodeconfig.local/etcd\n\ngo 1.26\n' > go.mod
  echo "build-control-plane: building etcd $ETCD_VERSION into $etcddir" >&2
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
    || die "go get of etcd $ETCD_VERSION failed"
  go build -trimpath -ldflags "-s -w" -o "$etcddir/etcd.tmp" go.etcd.io/etcd/server/v3 \
    || die "go build of etcd $ETCD_VERSION failed"
  mv "$etcddir/etcd.tmp" "$etcddir/etcd"
fi
echo "build-control-plane: ready in $bindir and $etcddir" >&2
