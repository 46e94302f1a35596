#!/usr/bin/env bash
# make test-interop: panva's openid-client 6 (a certified FAPI 2.0 relying party, from npm,
# unmodified) walks PAR + a signed request object + private_key_jwt + DPoP against kauth
# standalone on the bundled examples (the FAPI2 client `shop.bank`), and the same driver against
# oidc-provider (certified FAPI 2.0 authorization server) configured alike, as a reference.
# Every step must pass on both; the table shows the two side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v npm >/dev/null || { echo "npm is required for the interop tier" >&2; exit 1; }
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
cargo build -q --bin kauth

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export CLIENT_ID=shop.bank CLIENT_KEY=examples/client-fapi2.key.json
export REDIRECT_URI=http://127.0.0.1:8402/callback USERNAME=alice PASSWORD=alice-demo-password

wait_for() { # file pattern: waits up to 30 s for a line
  for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2
  cat "$1" "${1%.out}.log" 2>/dev/null >&2 || true
  return 1
}

start_kauth() { # name [flags]: kauth as the README's first command runs it, on a port of its
  # own; sets $issuer (not run in a subshell, so its pid is kept for the cleanup)
  local name=$1
  shift
  target/debug/kauth standalone --manifests examples --state-dir "$work/$name-state" --port 0 --ops-port 0 "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  wait_for "$work/$name.out" "health and metrics on"
  issuer=$(head -1 "$work/$name.out" | sed 's/.*issuer \([^ ]*\).*/\1/')
}
start_kauth kauth
kauth_issuer=$issuer
# With server nonces (RFC 9449 §8): openid-client retries on use_dpop_nonce by itself.
start_kauth kauth-nonce --dpop-nonce
nonce_issuer=$issuer

# The reference, on a free port (its issuer must be known before it starts).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PORT=$port node tests/interop/reference-provider.mjs >"$work/reference.out" 2>"$work/reference.log" &
pids+=($!)
wait_for "$work/reference.out" "^issuer "
reference_issuer=$(sed -n 's/^issuer //p' "$work/reference.out")

status=0
# kauth issues refresh tokens to clients that have the grant; oidc-provider is configured to
# do the same (issueRefreshToken), so both are asked for the same scopes but the API scope,
# which only kauth's examples define.
ISSUER=$kauth_issuer SCOPE="openid orders.read" EXPECT_DPOP_NONCE=0 node tests/interop/driver.mjs >"$work/kauth.results" || status=1
ISSUER=$nonce_issuer SCOPE="openid orders.read" EXPECT_DPOP_NONCE=1 node tests/interop/driver.mjs >"$work/kauth-nonce.results" || status=1
ISSUER=$reference_issuer SCOPE="openid" node tests/interop/driver.mjs >"$work/reference.results" || status=1

python3 - "$work/kauth.results" "$work/kauth-nonce.results" "$work/reference.results" <<'EOF'
import json, sys
def load(path):
    steps = {}
    for line in open(path):
        line = line.strip()
        if line.startswith('{'):
            r = json.loads(line)
            steps[r['step']] = r
    return steps
runs = {'kauth': load(sys.argv[1]), 'kauth --dpop-nonce': load(sys.argv[2]), 'oidc-provider': load(sys.argv[3])}
reference = runs['oidc-provider']
print(f"{'step':58} " + ' '.join(f'{name:18}' for name in runs))
mark = lambda r: '-' if r is None else ('ok' if r['ok'] else 'FAIL')
steps = list(dict.fromkeys(s for run in runs.values() for s in run))
for step in steps:
    print(f"{step:58} " + ' '.join(f'{mark(run.get(step)):18}' for run in runs.values()))
    for name, run in runs.items():
        if step in run and not run[step]['ok']:
            print(f"    {name}: {run[step].get('detail')}")
missing = [(name, s) for name, run in runs.items() for s in reference if s not in run]
if missing:
    print(f"steps a run never reached: {missing}")
    sys.exit(1)
EOF
[ "$status" -eq 0 ] || {
  echo "interop: a driver run failed (driver stderr above; kauth's log follows)" >&2
  tail -20 "$work/kauth.log" "$work/kauth-nonce.log" >&2
  exit 1
}
echo "interop: openid-client passes every step against kauth (with and without DPoP nonces) and against oidc-provider"
