#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the tests need, when a
# command of theirs is missing (apt-get update once, then one install).
# Called by e2e/cluster up, e2e/test.sh and .ci/run; a no-op when all are there.
set -euo pipefail

# command -> Debian package
declare -A packages=(
  [containerd]=containerd [runc]=runc [ctr]=containerd
  [/usr/lib/cni/bridge]=containernetworking-plugins [busybox]=busybox-static
  [iptables]=iptables [conntrack]=conntrack [ip]=iproute2 [nsenter]=util-linux
  [flock]=util-linux [ss]=iproute2 [pkill]=procps [protoc]=protobuf-compiler
  [gcc]=gcc [/usr/include/stdio.h]=libc6-dev [jq]=jq [curl]=curl [openssl]=openssl
  [objcopy]=binutils [make]=make [bzip2]=bzip2 [python3]=python3 [/etc/ssl/certs/ca-certificates.crt]=ca-certificates
)
missing=()
for c in "${!packages[@]}"; do
  if [[ "$c" == /* ]]; then [ -e "$c" ] && continue; else command -v "$c" >/dev/null 2>&1 && continue; fi
  missing+=("${packages[$c]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
[ "$(id -u)" = 0 ] || { echo "install-deps: missing packages ${missing[*]}; run as root" >&2; exit 1; }
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || { echo "install-deps: apt-get update failed" >&2; exit 1; }
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { echo "install-deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
