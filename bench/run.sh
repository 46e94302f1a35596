#!/usr/bin/env bash
# make bench: token and introspection throughput/latency of `kauth standalone` on the bundled
# examples, and the same load on an endpoint that only signs the same JWT (the ceiling).
# Load generator: wrk (Debian package), 16 connections, 2 threads, on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --bin kauth --bench ceiling -q 2>/dev/null || cargo build --release --bin kauth --benches
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start=$(date +%s%N)
./target/release/kauth standalone --manifests examples --state-dir "$work/state" --port 0 >"$work/out" 2>"$work/log" &
pids+=($!)
until grep -q "listening on" "$work/out" 2>/dev/null; do sleep 0.01; done
url=$(head -1 "$work/out" | sed 's/.*issuer \([^ ]*\).*/\1/')
until curl -sf "$url/readyz" >/dev/null; do sleep 0.005; done
echo "standalone start to ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"

creds="$work/state/secrets/shop/shop-backend-oauth"
AUTH=$(printf '%s:%s' "$(cat "$creds/CLIENT_ID")" "$(cat "$creds/CLIENT_SECRET")" | base64 -w0)
export AUTH
token=$(curl -s -u "$(cat "$creds/CLIENT_ID"):$(cat "$creds/CLIENT_SECRET")" -d grant_type=client_credentials -d scope=orders.read "$url/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

ceiling_bin=$(ls -t target/release/deps/ceiling-* | grep -v '\.d$' | head -1)
"$ceiling_bin" >"$work/ceiling" &
pids+=($!)
until [ -s "$work/ceiling" ]; do sleep 0.01; done
ceiling="http://$(cat "$work/ceiling")"

run() { # name url body
  echo "== $1"
  BODY="$3" wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/token.lua "$2" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
}
run "client_credentials (ES256) via /token" "$url/token" "grant_type=client_credentials&scope=orders.read"
run "introspection via /introspect" "$url/introspect" "token=$token"
AUTH="" run "ceiling: bare endpoint that only signs the same JWT" "$ceiling/sign" "x=1"
echo "provider RSS after load: $(ps -o rss= -p "${pids[0]}") KiB"

# Memory with 10,000 clients: one Scope granted everywhere, 10,000 OAuthClients requesting it.
many="$work/many"
mkdir -p "$many"
{
  printf 'apiVersion: kauth.dev/v1alpha1\nkind: Scope\nmetadata: {name: s, namespace: api}\nspec: {value: api.read, audience: "https://api.example.com", grantedTo: {namespaces: ["*"]}}\n'
  for i in $(seq 1 10000); do
    printf -- '---\napiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: c%d, namespace: team%d}\nspec: {scopes: [api.read]}\n' "$i" "$((i % 100))"
  done
} >"$many/clients.yaml"
start=$(date +%s%N)
./target/release/kauth standalone --manifests "$many" --state-dir "$work/many-state" --port 0 >"$work/many-out" 2>"$work/many-log" &
pids+=($!)
for _ in $(seq 1 1200); do grep -q "Get a token" "$work/many-out" 2>/dev/null && break; sleep 0.05; done
grep -q "Get a token" "$work/many-out" || { echo "10,000 clients: not ready in 60 s"; grep problem "$work/many-out" | head -3; exit 1; }
many_url=$(head -1 "$work/many-out" | sed 's/.*issuer \([^ ]*\).*/\1/')
until curl -sf "$many_url/readyz" >/dev/null; do sleep 0.01; done
echo "10,000 clients: first start (generating 10,000 secrets) to ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "10,000 clients: provider RSS: $(ps -o rss= -p "${pids[-1]}") KiB"
