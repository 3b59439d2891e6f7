#!/usr/bin/env bash
# Builds what the upstream conformance run needs, from the Go module proxy into
# the cache folder, keyed by version (as build-control-plane.sh does for the
# control plane). Reuses what is there.
#
#   e2e/scripts/build-conformance.sh [component...]
#
# Components (default: all):
#   e2e.test  ginkgo  agnhost   k8s.io/kubernetes K8S_VERSION  -> $cache/conformance-K8S_VERSION/bin
#   registry                    distribution REGISTRY_VERSION  -> $cache/registry-REGISTRY_VERSION/bin
#   coredns                     coredns COREDNS_VERSION        -> $cache/coredns-COREDNS_VERSION/bin
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

cache="${NODECONFIG_CACHE:-/var/cache/nodeconfig}"
kdir="$cache/conformance-$K8S_VERSION"
rdir="$cache/registry-$REGISTRY_VERSION"
cdir="$cache/coredns-$COREDNS_VERSION"

die() { echo "build-conformance: $*" >&2; exit 1; }
say() { echo "build-conformance: $*" >&2; }
command -v go >/dev/null || die "go is not installed"
export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(e2e.test ginkgo agnhost registry coredns)

major="${K8S_VERSION#v}"; major="${major%%.*}"
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
  k8s_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

# The module dir for k8s.io/kubernetes: its staging modules pinned to the
# published v0.x releases, as in build-control-plane.sh.
k8s_module() {
  mkdir -p "$kdir/src" "$kdir/bin"
  cd "$kdir/src"
  [ -f go.mod ] && return 0
  local staging_ver="v0.${K8S_VERSION#v1.}" modfile
  modfile="$(mktemp)"
  curl -fsS "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$K8S_VERSION.mod" -o "$modfile" \
    || die "could not fetch k8s.io/kubernetes $K8S_VERSION's go.mod from the Go module proxy"
  {
    printf 'module nodeconfig.local/conformance\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$modfile" | awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod.new
  rm -f "$modfile"
  grep -q '=> k8s.io/api ' go.mod.new || die "could not read the staging modules of k8s.io/kubernetes $K8S_VERSION"
  mv go.mod.new go.mod
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
    *) die "unknown component '$c'" ;;
  esac
done
say "ready: $kdir/bin $rdir/bin $cdir/bin"
