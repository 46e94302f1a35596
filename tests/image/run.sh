#!/usr/bin/env bash
# make test-image: builds the image (tests/image/build.sh, from the release binary the cluster
# tier built, or a new one) and runs the image tier (tests/image.rs) against it. chroot needs
# root: run it as root (CI does) or with password-less sudo.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "the image tier mounts the image and chroots into it: run it as root (sudo make test-image)" >&2
  exit 1
fi
image=$(tests/image/build.sh)
KAUTH_IMAGE=$image cargo test --test image -- --ignored
