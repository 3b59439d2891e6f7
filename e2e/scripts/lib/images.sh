# Local images for the node namespaces, built without a registry or docker.
# Sourced after common.sh.
#
#   images_build          builds the OCI archives into $NC_IMAGES (only what is
#                         missing or whose inputs changed)
#   images_import <i>     imports them into node i's containerd (k8s.io namespace);
#                         skips an image the node already has with the same digest
#
# Each archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...)
# packed in a tar; index.json names the image with the annotations containerd's
# importer reads (io.containerd.image.name, org.opencontainers.image.ref.name).
# One uncompressed layer per image, written as a deterministic tar, so the same
# inputs give the same digests on every machine.

NC_IMAGE_BUSYBOX="nodeconfig.local/busybox:1.35"
NC_IMAGE_PAUSE="nodeconfig.local/pause:3.10"
# nodeconfig's own binaries, built by images_build_nodeconfig after cargo build.
NC_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../../../Cargo.toml" | head -1)"
NC_IMAGE_AGENT="nodeconfig.local/node-agent:$NC_VERSION"
NC_IMAGE_OPERATOR="nodeconfig.local/nodeconfig-operator:$NC_VERSION"

# Image sources (pause.c, busybox/etc/...) live in e2e/images.
_NC_IMAGES_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../images" && pwd)"
_NC_IMAGES_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# Archive file of an image reference: nodeconfig.local/busybox:1.35 -> busybox-1.35.oci.tar
images_archive() {
  local ref="$1" base
  base="${ref##*/}"
  echo "$NC_IMAGES/${base/:/-}.oci.tar"
}

# Deterministic tar of the entries of a directory (names sorted, no ./ prefix,
# mtime 0, owner root, no atime/ctime headers).
_images_tar() {
  local dir="$1" out="$2"
  (cd "$dir" && LC_ALL=C find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    LC_ALL=C tar --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
      --no-recursion --verbatim-files-from --files-from=- -cf "$out")
}

_images_sha256() { sha256sum "$1" | cut -d' ' -f1; }
_images_size() { stat -c %s "$1"; }

# Writes a blob into an OCI layout dir; prints its digest (sha256:...).
_images_put_blob() {
  local layout="$1" file="$2" d
  d="$(_images_sha256 "$file")"
  mkdir -p "$layout/blobs/sha256"
  cp "$file" "$layout/blobs/sha256/$d"
  echo "sha256:$d"
}

# Builds one OCI archive.
#   _images_pack <ref> <rootfs dir> <config json (the image config's "config" object)> <out>
# Prints nothing; writes <out> and <out>.digest (the manifest digest containerd
# shows in `ctr images ls`).
_images_pack() {
  local ref="$1" rootfs="$2" runconfig="$3" out="$4"
  local work layout arch layer_d layer_size config_d config_size manifest_d manifest_size
  work="$(mktemp -d "$NC_IMAGES/.build.XXXXXX")"
  layout="$work/layout"
  mkdir -p "$layout/blobs/sha256"
  arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"

  _images_tar "$rootfs" "$work/layer.tar" || { rm -rf "$work"; return 1; }
  layer_d="$(_images_put_blob "$layout" "$work/layer.tar")"
  layer_size="$(_images_size "$work/layer.tar")"

  jq -cnS --arg arch "$arch" --arg diff "$layer_d" --argjson cfg "$runconfig" --arg ref "$ref" '{
      architecture: $arch, os: "linux", created: "1970-01-01T00:00:00Z",
      config: $cfg,
      rootfs: {type: "layers", diff_ids: [$diff]},
      history: [{created: "1970-01-01T00:00:00Z", created_by: ("nodeconfig e2e/scripts/lib/images.sh: " + $ref)}]
    }' >"$work/config.json"
  config_d="$(_images_put_blob "$layout" "$work/config.json")"
  config_size="$(_images_size "$work/config.json")"

  jq -cnS --arg cd "$config_d" --argjson cs "$config_size" --arg ld "$layer_d" --argjson ls "$layer_size" '{
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
      layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $ld, size: $ls}]
    }' >"$work/manifest.json"
  manifest_d="$(_images_put_blob "$layout" "$work/manifest.json")"
  manifest_size="$(_images_size "$work/manifest.json")"

  jq -cnS --arg md "$manifest_d" --argjson ms "$manifest_size" --arg arch "$arch" --arg ref "$ref" '{
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
        platform: {architecture: $arch, os: "linux"},
        annotations: {
          "io.containerd.image.name": $ref,
          "org.opencontainers.image.ref.name": ($ref | sub("^.*:"; ""))
        }
      }]
    }' >"$layout/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

  _images_tar "$layout" "$work/image.tar" || { rm -rf "$work"; return 1; }
  mv -f "$work/image.tar" "$out"
  echo "$manifest_d" >"$out.digest"
  rm -rf "$work"
}

# Hash of everything an image is built from; the archive is rebuilt when it changes.
_images_inputs_hash() {
  local name="$1"
  {
    echo "$name"
    sha256sum <"$_NC_IMAGES_SCRIPT"
    case "$name" in
      busybox)
        sha256sum </bin/busybox
        (cd "$_NC_IMAGES_SRC/busybox" && LC_ALL=C find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        ;;
      pause)
        sha256sum <"$_NC_IMAGES_SRC/pause.c"
        gcc --version | head -1
        ;;
    esac
  } | sha256sum | cut -d' ' -f1
}

# Is the archive present and built from the current inputs?
_images_fresh() {
  local out="$1" hash="$2"
  [ -s "$out" ] && [ -s "$out.digest" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$hash" ]
}

_images_build_busybox() {
  local out hash root p
  out="$(images_archive "$NC_IMAGE_BUSYBOX")"
  hash="$(_images_inputs_hash busybox)"
  _images_fresh "$out" "$hash" && return 0
  log "images: building $NC_IMAGE_BUSYBOX from /bin/busybox"
  root="$(mktemp -d "$NC_IMAGES/.rootfs.XXXXXX")"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var,dev,proc,sys}
  chmod 0755 "$root" "$root"/{bin,sbin,usr,usr/bin,usr/sbin,etc,var,dev,proc,sys}
  chmod 0700 "$root/root"
  chmod 1777 "$root/tmp"
  install -m 0755 /bin/busybox "$root/bin/busybox"
  for p in $(busybox --list-full); do
    [ "$p" = bin/busybox ] && continue
    ln -sfn /bin/busybox "$root/$p"
  done
  install -m 0644 "$_NC_IMAGES_SRC/busybox/etc/passwd" "$root/etc/passwd"
  install -m 0644 "$_NC_IMAGES_SRC/busybox/etc/group" "$root/etc/group"
  if ! _images_pack "$NC_IMAGE_BUSYBOX" "$root" \
      '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"}' "$out"; then
    rm -rf "$root"; log "images: building $NC_IMAGE_BUSYBOX failed"; return 1
  fi
  rm -rf "$root"
  echo "$hash" >"$out.inputs"
}

_images_build_pause() {
  local out hash root
  out="$(images_archive "$NC_IMAGE_PAUSE")"
  hash="$(_images_inputs_hash pause)"
  _images_fresh "$out" "$hash" && return 0
  log "images: building $NC_IMAGE_PAUSE from $_NC_IMAGES_SRC/pause.c"
  root="$(mktemp -d "$NC_IMAGES/.rootfs.XXXXXX")"
  chmod 0755 "$root"
  if ! gcc -static -Os -s -Wall -Wextra -o "$root/pause" "$_NC_IMAGES_SRC/pause.c"; then
    rm -rf "$root"; log "images: compiling $_NC_IMAGES_SRC/pause.c failed (gcc -static needs libc6-dev)"; return 1
  fi
  chmod 0755 "$root/pause"
  # Upstream's pause image runs as 65535:65535; numeric, so no /etc/passwd needed.
  if ! _images_pack "$NC_IMAGE_PAUSE" "$root" \
      '{"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"}' "$out"; then
    rm -rf "$root"; log "images: building $NC_IMAGE_PAUSE failed"; return 1
  fi
  rm -rf "$root"
  echo "$hash" >"$out.inputs"
}

# Copies programs and the shared libraries they (and the given dlopen'd
# modules) link into a rootfs, at their own paths.
_images_copy_with_libs() {
  local root="$1" f lib; shift
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    [ -e "$root$f" ] || cp -L "$f" "$root$f" || return 1
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*'); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib" || return 1
    done
  done
}

# The node agent's tools as a Companion pod, where the host's are out of reach:
# iptables (Debian's xtables multi-binaries, nf_tables and legacy, with their
# extension modules; plain `iptables*` is the backend this host's `iptables`
# is, as the agent programs the backend the node uses) and conntrack.
_NC_AGENT_TOOLS=(/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/conntrack)
_images_agent_tools_hash() { sha256sum "${_NC_AGENT_TOOLS[@]}" "$(readlink -f /usr/sbin/iptables)" 2>/dev/null; }
_images_agent_tools() {
  local root="$1" multi x n
  for x in "${_NC_AGENT_TOOLS[@]}"; do
    [ -x "$x" ] || { log "images: $x missing (Debian's iptables and conntrack packages)"; return 1; }
  done
  multi="$(readlink -f /usr/sbin/iptables)"
  case "$multi" in */xtables-nft-multi|*/xtables-legacy-multi) ;; *) log "images: /usr/sbin/iptables is $multi, not an xtables multi-binary"; return 1 ;; esac
  x="$(dirname "$(find /usr/lib -path '*/xtables/libxt_standard.so' 2>/dev/null | head -1)")"
  [ -d "$x" ] || { log "images: iptables' extension modules (xtables/libxt_*.so) not found under /usr/lib"; return 1; }
  _images_copy_with_libs "$root" "${_NC_AGENT_TOOLS[@]}" "$x"/*.so || return 1
  for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sfn "$(basename "$multi")" "$root/usr/sbin/$n"
    ln -sfn xtables-nft-multi "$root/usr/sbin/${n/tables/tables-nft}"
    ln -sfn xtables-legacy-multi "$root/usr/sbin/${n/tables/tables-legacy}"
  done
  mkdir -p "$root/etc"
  [ -f /etc/protocols ] && install -m 0644 /etc/protocols "$root/etc/protocols"
  true
}

# An image of one of nodeconfig's binaries: the stripped binary and the shared
# libraries it links (glibc, libgcc_s), so no base image or registry is needed;
# the agent's also has its tools (_images_agent_tools).
_images_build_binary() {
  local ref="$1" bin="$2" user="$3" out hash root lib tools=0
  out="$(images_archive "$ref")"
  [ -x "$bin" ] || { log "images: $bin is not built"; return 1; }
  [ "$ref" = "$NC_IMAGE_AGENT" ] && tools=1
  hash="$( { echo "$ref $user"; sha256sum <"$_NC_IMAGES_SCRIPT"; sha256sum <"$bin";
             [ "$tools" = 1 ] && _images_agent_tools_hash; } | sha256sum | cut -d' ' -f1)"
  _images_fresh "$out" "$hash" && return 0
  log "images: building $ref from $bin"
  root="$(mktemp -d "$NC_IMAGES/.rootfs.XXXXXX")"
  chmod 0755 "$root"
  mkdir -p "$root/usr/local/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  objcopy --strip-all "$bin" "$root/usr/local/bin/$(basename "$bin")" || { rm -rf "$root"; return 1; }
  for lib in $(ldd "$bin" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  if [ "$tools" = 1 ]; then
    _images_agent_tools "$root" || { rm -rf "$root"; return 1; }
  fi
  if ! _images_pack "$ref" "$root" \
      "$(jq -cn --arg b "/usr/local/bin/$(basename "$bin")" --arg u "$user" \
          '{Entrypoint: [$b], User: $u, WorkingDir: "/", Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}')" "$out"; then
    rm -rf "$root"; log "images: building $ref failed"; return 1
  fi
  rm -rf "$root"
  echo "$hash" >"$out.inputs"
}

# Images of node-agent (root: it runs the node) and the operator (non-root),
# from binaries in the given directory (target/debug or target/release).
_images_build_nodeconfig() {
  local bindir="$1"
  require_cmds objcopy ldd jq
  mkdir -p "$NC_IMAGES"
  _images_build_binary "$NC_IMAGE_AGENT" "$bindir/node-agent" "0:0" || return 1
  _images_build_binary "$NC_IMAGE_OPERATOR" "$bindir/nodeconfig-operator" "65532:65532" || return 1
}

# Builds every local image archive into $NC_IMAGES; a no-op when all are fresh.
_images_build() {
  require_cmds gcc jq tar sha256sum busybox
  mkdir -p "$NC_IMAGES"
  rm -rf "$NC_IMAGES"/.build.* "$NC_IMAGES"/.rootfs.*   # left by an interrupted build
  _images_build_busybox || return 1
  _images_build_pause || return 1
}

# Imports the archives into node i's containerd, namespace k8s.io (the CRI one).
# Idempotent: an image the node already has with the same manifest digest is skipped.
_images_import() {
  local i="$1" sock ref out want have err
  sock="$(node_cri_socket "$i")"
  for ref in "$NC_IMAGE_PAUSE" "$NC_IMAGE_BUSYBOX" "$NC_IMAGE_AGENT" "$NC_IMAGE_OPERATOR"; do
    out="$(images_archive "$ref")"
    case "$ref" in
      "$NC_IMAGE_AGENT"|"$NC_IMAGE_OPERATOR") [ -s "$out" ] || continue ;;  # built after cargo
    esac
    [ -s "$out" ] && [ -s "$out.digest" ] || { log "images: $out missing (run images_build)"; return 1; }
    want="$(cat "$out.digest")"
    have="$(ctr --address "$sock" -n k8s.io images ls 2>/dev/null | awk -v r="$ref" '$1 == r {print $3}')"
    [ "$have" = "$want" ] && continue
    if ! err="$(ctr --address "$sock" -n k8s.io images import "$out" 2>&1 >/dev/null)"; then
      log "images: importing $ref into $(node_name "$i") failed: $(echo "$err" | tr '\n' ' ')"
      return 1
    fi
    have="$(ctr --address "$sock" -n k8s.io images ls 2>/dev/null | awk -v r="$ref" '$1 == r {print $3}')"
    [ "$have" = "$want" ] || { log "images: $ref not named as expected in $(node_name "$i") after import (got digest '$have', want $want)"; return 1; }
  done
}

# Entry points run in a subshell with the caller's errexit, nounset, pipefail
# and ERR trap off (failures are handled explicitly); they report by exit status.
_images_isolated() { ( set +e +u +E +o pipefail; trap - ERR; "$@" ); }
images_build()  { _images_isolated _images_build "$@"; }
images_import() { _images_isolated _images_import "$@"; }
images_build_nodeconfig() { _images_isolated _images_build_nodeconfig "$@"; }
