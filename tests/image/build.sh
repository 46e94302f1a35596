#!/usr/bin/env bash
# make image [IMAGE=registry/kauth:tag]: the container image of the Containerfile's layout,
# assembled here from the release binary without pulling anything (no registry needed):
# /kauth (debug info stripped) as the entrypoint, the C libraries `ldd` lists for it, the
# system's CA certificates, /etc/passwd and /etc/group with nonroot (65532), user 65532:65532,
# no shell, OCI labels with the crate version. Prints the image name.
# Push it with: buildah --storage-driver vfs push IMAGE docker://registry/kauth:tag
# (vfs: the storage driver that works in unprivileged sandboxes and CI machines alike).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image=${IMAGE:-ghcr.io/kauth-dev/kauth:$version}
tests/ensure-packages.sh buildah ca-certificates binutils
buildah() { command buildah --storage-driver vfs "$@"; }
# The release binary the other tiers share (cargo builds it only if a source changed).
if [ -z "${KAUTH_BIN:-}" ]; then
  cargo build --release --locked --bin kauth >&2
fi
bin=${KAUTH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/kauth}

c=$(buildah from scratch)
trap 'buildah rm "$c" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$c")
objcopy --strip-debug "$bin" "$root/kauth"
chmod 0755 "$root/kauth"
# Every library the binary links, at the path the dynamic loader looks for it.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
buildah umount "$c" >/dev/null
buildah config \
  --entrypoint '["/kauth"]' --cmd '' --user 65532:65532 --workingdir /home/nonroot \
  --label org.opencontainers.image.title=kauth \
  --label "org.opencontainers.image.description=Kubernetes-native OAuth 2.0 / OpenID Connect provider and client operator" \
  --label "org.opencontainers.image.version=$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label org.opencontainers.image.source=https://github.com/kauth-dev/kauth \
  "$c" >/dev/null
buildah commit --quiet "$c" "$image" >/dev/null
echo "$image"
