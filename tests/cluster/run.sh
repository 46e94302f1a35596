#!/usr/bin/env bash
# make test-cluster: the cluster tier against KUBECONFIG, or a local etcd + kube-apiserver
# started (and stopped) here.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=$(mktemp -d)
trap 'tests/cluster/down.sh "$state"; rm -rf "$state"' EXIT
KUBECONFIG=$(tests/cluster/up.sh "$state")
export KUBECONFIG
# The local apiserver's ServiceAccount signing key lets a test forge an expired cluster token.
[ -f "$state/sa.key" ] && export KAUTH_SA_SIGNING_KEY="$state/sa.key"
export KAUTH_CLUSTER_STATE="$state"
export KAUTH_TOOLS=$(tests/cluster/tools.sh)
cargo build --release --bin kauth
export KAUTH_BIN="${KAUTH_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/kauth}"
# The scale benchmarks (bench_*) are make bench's; the tier runs them only when asked by name.
if [ $# -eq 0 ]; then set -- --skip bench_; fi
cargo test --test cluster -- --ignored --test-threads=1 "$@"
