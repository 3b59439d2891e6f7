# What every build from the k8s.io/kubernetes module shares: its go.mod with
# the staging modules pinned, and the version stamped into the binaries.
# Sourced by build-control-plane.sh and build-conformance.sh after versions.env.

# Writes ./go.mod for a module requiring k8s.io/kubernetes $K8S_VERSION.
# k8s.io/kubernetes refers to its staging modules as ./staging/...; each of
# them is pinned to the matching published v0.x release instead.
#   k8s_write_gomod MODULE_PATH
k8s_write_gomod() {
  local module="$1" staging_ver="v0.${K8S_VERSION#v1.}" modfile
  modfile="$(mktemp)"
  if ! curl -fsS "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$K8S_VERSION.mod" -o "$modfile"; then
    echo "could not fetch k8s.io/kubernetes $K8S_VERSION's go.mod from the Go module proxy" >&2
    rm -f "$modfile"; return 1
  fi
  {
    printf 'module %s\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$module" "$K8S_VERSION"
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$modfile" | awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod.new
  rm -f "$modfile"
  if ! grep -q '=> k8s.io/api ' go.mod.new; then
    echo "could not read the staging modules of k8s.io/kubernetes $K8S_VERSION" >&2
    rm -f go.mod.new; return 1
  fi
  mv go.mod.new go.mod
}

# The -ldflags that stamp $K8S_VERSION into a binary, as upstream's build does.
k8s_ldflags() {
  local major="${K8S_VERSION#v}" minor="${K8S_VERSION#v*.}" p flags="-s -w"
  major="${major%%.*}"; minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}
