#!/usr/bin/env bash
# make bench: token and introspection throughput/latency of `kauth standalone` on the bundled
# examples, and the same load on an endpoint that only signs the same JWT (the ceiling).
# Load generator: wrk (Debian package), 16 connections, 2 threads, on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --bin kauth --bench ceiling --bench dpop_proofs -q 2>/dev/null || cargo build --release --bin kauth --benches
work=${BENCH_WORK:-$(mktemp -d)}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${BENCH_WORK:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

ops_url() { # summary file: the operations listener's base URL
  sed -n 's|.*health and metrics on \(http://[^)]*\)).*|\1|p' "$1" | head -1
}

start_standalone() { # label [extra flags]: starts on the examples and prints how long it took to be ready
  local start label=$1
  shift
  rm -f "$work/out"
  start=$(date +%s%N)
  ./target/release/kauth standalone --manifests examples --state-dir "$work/state" --port 0 --ops-port 0 "$@" >"$work/out" 2>"$work/log" &
  pids+=($!)
  until grep -q "health and metrics on" "$work/out" 2>/dev/null; do sleep 0.005; done
  url=$(head -1 "$work/out" | sed 's/.*issuer \([^ ]*\).*/\1/')
  until curl -sf "$(ops_url "$work/out")/readyz" >/dev/null; do sleep 0.005; done
  echo "standalone $label to ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"
}
# The first start generates the signing keys (an RSA-2048 one among them) and secrets.
start_standalone "first start (generates keys and secrets)"
kill "${pids[-1]}" && wait "${pids[-1]}" 2>/dev/null || true
rm -f "$work/out"
start_standalone "restart"

creds="$work/state/secrets/shop/shop-backend-oauth"
AUTH=$(printf '%s:%s' "$(cat "$creds/CLIENT_ID")" "$(cat "$creds/CLIENT_SECRET")" | base64 -w0)
export AUTH
token=$(curl -s -u "$(cat "$creds/CLIENT_ID"):$(cat "$creds/CLIENT_SECRET")" -d grant_type=client_credentials -d scope=orders.read "$url/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')

ceiling_bin=$(ls -t target/release/deps/ceiling-* | grep -v '\.d$' | head -1)
"$ceiling_bin" >"$work/ceiling" &
pids+=($!)
until [ -s "$work/ceiling" ]; do sleep 0.01; done
ceiling="http://$(cat "$work/ceiling")"

run() { # name url body [script]
  echo "== $1"
  BODY="$3" wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "${4:-bench/token.lua}" "$2" | tee "$work/wrk-out" |
    grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
}
rps() { awk '/Requests\/sec/ {print $2}' "$work/wrk-out"; }
run "client_credentials (ES256) via /token" "$url/token" "grant_type=client_credentials&scope=orders.read"
bearer=$(rps)
# The same with a DPoP proof per request (RFC 9449): the proof verified, its jti checked and
# recorded in the grant store, the token bound (cnf.jkt). Proofs are made before the run (wrk
# cannot sign), enough for 40,000 requests a second, one file per wrk thread.
proofs_bin=$(ls -t target/release/deps/dpop_proofs-* | grep -v '\.d$' | head -1)
"$proofs_bin" $((40000 * ${DURATION%s})) "$url/token" "$work/proofs.0" "$work/proofs.1"
PROOFS="$work/proofs" run "client_credentials (ES256) with a DPoP proof via /token" "$url/token" \
  "grant_type=client_credentials&scope=orders.read" bench/dpop.lua
echo "client_credentials: with DPoP / without = $(awk -v a="$(rps)" -v b="$bearer" 'BEGIN {printf "%.2f", a / b}')"
rm -f "$work"/proofs.*
run "introspection via /introspect" "$url/introspect" "token=$token"
AUTH="" run "ceiling: bare endpoint that only signs the same JWT" "$ceiling/sign" "x=1"
echo "provider RSS after load: $(ps -o rss= -p "${pids[1]}") KiB"

# The refresh_token grant: alice signs in to shop-web once through the real pages, then
# more authorizations (session and consent remembered) give one refresh family per
# connection. Each refresh is a grant-store transaction (rotate, record, issue).
seed_refresh_tokens() { # base_url scope count -> comma-separated refresh tokens
  local base=$1 scope=$2 count=$3 jar="$work/jar" cb="http%3A%2F%2F127.0.0.1%3A8400%2Fcallback"
  local authz="$base/authorize?client_id=shop.shop-web&response_type=code&redirect_uri=$cb&state=b&scope=$scope"
  local web="$work/state/secrets/shop/shop-web-oauth" out=() loc page code
  field() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" <<<"$page" | head -1; }
  for _ in $(seq 1 "$count"); do
    loc=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$authz")
    if [[ $loc == */login* ]]; then
      page=$(curl -s -c "$jar" -b "$jar" "$loc")
      loc=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' --data-urlencode "request=$(field request)" \
        --data-urlencode "csrf=$(field csrf)" -d username=alice -d password=alice-demo-password "$base/login")
    fi
    if [[ $loc == */consent* ]]; then
      page=$(curl -s -c "$jar" -b "$jar" "$loc")
      loc=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' --data-urlencode "request=$(field request)" \
        --data-urlencode "csrf=$(field csrf)" -d decision=allow "$base/consent")
    fi
    code=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$loc")
    out+=("$(curl -s -u "$(cat "$web/CLIENT_ID"):$(cat "$web/CLIENT_SECRET")" -d grant_type=authorization_code \
      -d "code=$code" -d "redirect_uri=http://127.0.0.1:8400/callback" "$base/token" |
      sed 's/.*"refresh_token":"\([^"]*\)".*/\1/')")
  done
  local IFS=,
  echo "${out[*]}"
}
web="$work/state/secrets/shop/shop-web-oauth"
REFRESH_AUTH=$(printf '%s:%s' "$(cat "$web/CLIENT_ID")" "$(cat "$web/CLIENT_SECRET")" | base64 -w0)
refresh_run() { # name url seed
  echo "== $1"
  AUTH="$REFRESH_AUTH" SEED="$3" THREADS=2 wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s bench/refresh.lua "$2/token" |
    tee "$work/wrk-out" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
}
families=$((CONNS + 2)) # one per connection, and a spare per wrk thread
refresh_run "refresh_token (access token only), SQLite grant store, shared commits" "$url" "$(seed_refresh_tokens "$url" orders.read "$families")"
grouped=$(rps)
# The same with every write committed on its own (the store before group commit, WAL kept).
kill "${pids[1]}" && wait "${pids[1]}" 2>/dev/null || true
start_standalone "restart, one commit per write" --store-group-commit=false
refresh_run "refresh_token (access token only), SQLite grant store, one commit per write" "$url" \
  "$(seed_refresh_tokens "$url" orders.read "$families")"
alone=$(rps)
echo "refresh on SQLite: shared commits / one commit per write = $(awk -v a="$grouped" -v b="$alone" 'BEGIN {printf "%.1f", a / b}')x"
kill "${pids[-1]}" && wait "${pids[-1]}" 2>/dev/null || true
start_standalone "restart"
refresh_run "refresh_token with openid (plus an RS256 ID token), SQLite" "$url" \
  "$(seed_refresh_tokens "$url" openid%20orders.read "$families")"
if [ -x tests/postgres/up.sh ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # Its own folder: the server runs as the postgres user, which cannot enter $work (0700).
  pg_dir=$(mktemp -d)
  trap 'tests/postgres/down.sh "$pg_dir" >/dev/null 2>&1 || true; cleanup' EXIT
  pg_url=$(KAUTH_PG_FSYNC=on tests/postgres/up.sh "$pg_dir")
  # fsync stays on here: the figure is what a real server pays per rotation.
  ./target/release/kauth standalone --manifests examples --state-dir "$work/state" --port 0 --ops-port 0 --store-url "$pg_url" \
    >"$work/pg-out" 2>"$work/pg-log" &
  pids+=($!)
  until grep -q "health and metrics on" "$work/pg-out" 2>/dev/null; do sleep 0.01; done
  pg_kauth=$(head -1 "$work/pg-out" | sed 's/.*issuer \([^ ]*\).*/\1/')
  until curl -sf "$(ops_url "$work/pg-out")/readyz" >/dev/null; do sleep 0.005; done
  rm -f "$work/jar"
  refresh_run "refresh_token (access token only), PostgreSQL grant store" "$pg_kauth" \
    "$(seed_refresh_tokens "$pg_kauth" orders.read "$families")"
  # Replicas behind a balancer (HAProxy, round robin, a new connection to a replica per request):
  # client_credentials through it to one replica, then to three on this PostgreSQL. Same
  # machine, two cores: the point is that three do no worse, not that they scale.
  if command -v haproxy >/dev/null || tests/ensure-packages.sh haproxy >/dev/null 2>&1; then
    replica_urls=("${pg_kauth#http://}")
    for i in 2 3; do
      ./target/release/kauth standalone --manifests examples --state-dir "$work/state" --port 0 --ops-port 0 --store-url "$pg_url" \
        >"$work/pg-out$i" 2>"$work/pg-log$i" &
      pids+=($!)
      until grep -q "health and metrics on" "$work/pg-out$i" 2>/dev/null; do sleep 0.01; done
      replica_urls+=("$(head -1 "$work/pg-out$i" | sed 's/.*listening on \([^;]*\);.*/\1/')")
    done
    balance() { # count: HAProxy in front of the first count replicas; its URL in $lb
      local port cfg="$work/haproxy$1.cfg" i
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      { printf 'global\n    maxconn 4000\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    option http-server-close\n'
        printf 'frontend kauth\n    bind 127.0.0.1:%s\n    default_backend replicas\nbackend replicas\n    balance roundrobin\n' "$port"
        for i in $(seq 0 $(($1 - 1))); do printf '    server r%s %s\n' "$i" "${replica_urls[$i]}"; done; } >"$cfg"
      haproxy -db -f "$cfg" >/dev/null 2>&1 &
      pids+=($!)
      lb="http://127.0.0.1:$port"
      until curl -sf "$lb/.well-known/openid-configuration" >/dev/null; do sleep 0.01; done
    }
    balance 1
    run "client_credentials via HAProxy, 1 replica (PostgreSQL)" "$lb/token" "grant_type=client_credentials&scope=orders.read"
    one=$(rps)
    balance 3
    run "client_credentials via HAProxy, 3 replicas (PostgreSQL)" "$lb/token" "grant_type=client_credentials&scope=orders.read"
    echo "replicas behind HAProxy: 3 / 1 = $(awk -v a="$(rps)" -v b="$one" 'BEGIN {printf "%.2f", a / b}')"
  fi
  # The store down: PostgreSQL stopped. Refresh needs it and fails fast; client_credentials does not.
  seed=$(seed_refresh_tokens "$pg_kauth" orders.read 1)
  tests/postgres/down.sh "$pg_dir" >/dev/null 2>&1 || true
  echo "== PostgreSQL stopped"
  echo "   refresh answered $(curl -s -o /dev/null -w '%{http_code} in %{time_total} s' -u "$(cat "$web/CLIENT_ID"):$(cat "$web/CLIENT_SECRET")" \
    -d grant_type=refresh_token -d "refresh_token=$seed" "$pg_kauth/token")"
  echo "   client_credentials answered $(curl -s -o /dev/null -w '%{http_code} in %{time_total} s' -u "$(cat "$creds/CLIENT_ID"):$(cat "$creds/CLIENT_SECRET")" \
    -d grant_type=client_credentials -d scope=orders.read "$pg_kauth/token")"
fi

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
./target/release/kauth standalone --manifests "$many" --state-dir "$work/many-state" --port 0 --ops-port 0 >"$work/many-out" 2>"$work/many-log" &
pids+=($!)
for _ in $(seq 1 1200); do grep -q "Get a token" "$work/many-out" 2>/dev/null && break; sleep 0.05; done
grep -q "Get a token" "$work/many-out" || { echo "10,000 clients: not ready in 60 s"; grep problem "$work/many-out" | head -3; exit 1; }
many_url=$(head -1 "$work/many-out" | sed 's/.*issuer \([^ ]*\).*/\1/')
until curl -sf "$(ops_url "$work/many-out")/readyz" >/dev/null; do sleep 0.01; done
echo "10,000 clients: first start (generating 10,000 secrets) to ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "10,000 clients: provider RSS: $(ps -o rss= -p "${pids[-1]}") KiB"
# The same first start with the state folder in memory: kauth's own cost, without the disk's.
# Creating 50,000 files is most of the start on disk, and it varies tenfold with the
# filesystem's state (ext4 scans recently deleted inodes when it picks a new one).
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  shm_state=$(mktemp -d /dev/shm/kauth-bench.XXXXXX)
  start=$(date +%s%N)
  ./target/release/kauth standalone --manifests "$many" --state-dir "$shm_state" --port 0 --ops-port 0 >"$work/shm-out" 2>"$work/shm-log" &
  shm_pid=$!
  pids+=("$shm_pid")
  for _ in $(seq 1 1200); do grep -q "Get a token" "$work/shm-out" 2>/dev/null && break; sleep 0.01; done
  echo "10,000 clients: first start with the state folder on tmpfs: $(( ($(date +%s%N) - start) / 1000000 )) ms (kauth CPU $(awk '{printf "%.2f", ($14 + $15) / 100}' /proc/$shm_pid/stat) s)"
  kill "$shm_pid" && wait "$shm_pid" 2>/dev/null || true
  unset 'pids[-1]'
  rm -rf "$shm_state"
fi
many_port=${many_url##*:}
kill "${pids[-1]}" && wait "${pids[-1]}" 2>/dev/null || true
rm -f "$work/many-out"
start=$(date +%s%N)
./target/release/kauth standalone --manifests "$many" --state-dir "$work/many-state" --port "$many_port" --ops-port 0 >"$work/many-out" 2>"$work/many-log" &
pids+=($!)
for _ in $(seq 1 1200); do grep -q "Get a token" "$work/many-out" 2>/dev/null && break; sleep 0.02; done
echo "10,000 clients: restart to ready: $(( ($(date +%s%N) - start) / 1000000 )) ms"
# A reload: one client added while token requests keep coming (new connection each).
c1="$work/many-state/secrets/team1/c1-oauth"
( for _ in $(seq 1 300); do curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -u "$(cat "$c1/CLIENT_ID"):$(cat "$c1/CLIENT_SECRET")" \
  -d grant_type=client_credentials "$many_url/token"; sleep 0.01; done >"$work/many-latency" ) &
prober=$!
sleep 0.5
printf -- '---\napiVersion: kauth.dev/v1alpha1\nkind: OAuthClient\nmetadata: {name: late, namespace: team1}\nspec: {scopes: [api.read]}\n' >>"$many/clients.yaml"
start=$(date +%s%N)
late="$work/many-state/secrets/team1/late-oauth"
until [ -s "$late/CLIENT_SECRET" ] && curl -sf -u "team1.late:$(cat "$late/CLIENT_SECRET")" -d grant_type=client_credentials "$many_url/token" >/dev/null; do sleep 0.01; done
echo "10,000 clients: a reload adding one client: served after $(( ($(date +%s%N) - start) / 1000000 )) ms (files are looked at every 500 ms); the pass itself: $(sed -n 's/.*manifests reloaded.*took_ms[^0-9]*\([0-9]*\).*/\1/p' "$work/many-log" | tail -1) ms"
wait "$prober"
echo "   token requests meanwhile: $(cut -d' ' -f1 "$work/many-latency" | sort | uniq -c | tr -s ' ' | tr '\n' ';') slowest $(cut -d' ' -f2 "$work/many-latency" | sort -n | tail -1) s"

# Password bursts (README, Tenancy, T8): the throttle reserves attempts before the argon2id check and
# at most a few checks run at once, so a burst neither exhausts memory nor starves people.
# kauth trusts 127.0.0.1 as a proxy here, so X-Forwarded-For stands for distinct addresses.
burst_dir="$work/burst"
mkdir -p "$burst_dir/m"
cp examples/*.yaml "$burst_dir/m/"
{
  printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: kauth-users, namespace: kauth}\nstringData:\n  users.yaml: |\n    users:\n'
  printf '      - {username: alice, passwordHash: "%s"}\n' "$(printf 'alice-pw' | ./target/release/kauth hash-password)"
  printf '      - {username: bob, passwordHash: "%s"}\n' "$(printf 'bob-pw' | ./target/release/kauth hash-password)"
} >"$burst_dir/m/people.yaml"
./target/release/kauth standalone --manifests "$burst_dir/m" --state-dir "$burst_dir/state" --port 0 --ops-port 0 \
  --trusted-proxy 127.0.0.1/32 >"$burst_dir/out" 2>"$burst_dir/log" &
burst_pid=$!
pids+=("$burst_pid")
until grep -q "health and metrics on" "$burst_dir/out" 2>/dev/null; do sleep 0.01; done
burst_url=$(head -1 "$burst_dir/out" | sed 's/.*issuer \([^ ]*\).*/\1/')
until curl -sf "$(ops_url "$burst_dir/out")/readyz" >/dev/null; do sleep 0.01; done
login_page() { # jar -> "request csrf" of a fresh pending sign-in
  local loc page
  loc=$(curl -s -c "$1" -b "$1" -o /dev/null -w '%{redirect_url}' \
    "$burst_url/authorize?client_id=shop.shop-web&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A8400%2Fcallback&state=b&scope=openid")
  page=$(curl -s -c "$1" -b "$1" "$loc")
  printf '%s %s' "$(sed -n 's/.*name="request" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)" \
    "$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)"
}
burst() { # label spread(one|many): 200 wrong passwords at once, bob signs in 10 times meanwhile
  local label=$1 spread=$2 jar="$burst_dir/jar-$2" req csrf statuses="$burst_dir/statuses-$2" times="$burst_dir/times-$2"
  rm -f "$statuses" "$times"
  read -r req csrf <<<"$(login_page "$jar")"
  local idle; idle=$(awk '/VmRSS/ {print $2}' /proc/$burst_pid/status)
  local started; started=$(date +%s%N)
  local attackers=()
  for i in $(seq 1 200); do
    local user=alice addr=203.0.113.66
    if [ "$spread" = many ]; then user="nobody$i"; addr="10.$((i / 250)).$((i % 250)).1"; fi
    curl -s -o /dev/null -w '%{http_code}\n' -b "$jar" -H "X-Forwarded-For: $addr" --data-urlencode "request=$req" \
      --data-urlencode "csrf=$csrf" -d "username=$user" -d password=wrong "$burst_url/login" >>"$statuses" &
    attackers+=($!)
  done
  for i in $(seq 1 10); do
    local bjar="$burst_dir/bob-$spread-$i" breq bcsrf
    read -r breq bcsrf <<<"$(login_page "$bjar")"
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -b "$bjar" -H "X-Forwarded-For: 198.51.100.7" \
      --data-urlencode "request=$breq" --data-urlencode "csrf=$bcsrf" -d username=bob -d password=bob-pw \
      "$burst_url/login" >>"$times"
  done
  wait "${attackers[@]}"
  local took=$(( ($(date +%s%N) - started) / 1000000 ))
  local peak; peak=$(awk '/VmHWM/ {print $2}' /proc/$burst_pid/status)
  echo "== password burst: $label"
  echo "   200 wrong passwords: $(grep -c '^401' "$statuses") checked, $(grep -c '^429' "$statuses") refused by the throttle, $(grep -c '^503' "$statuses") turned away (all check slots busy); burst over in $took ms"
  echo "   RSS: $idle KiB before, peak $peak KiB (peak - before: $(( (peak - idle) / 1024 )) MiB)"
  echo "   bob signing in meanwhile (10 times): statuses $(cut -d' ' -f1 "$times" | sort | uniq -c | tr -s ' ' | tr '\n' ';'), slowest $(cut -d' ' -f2 "$times" | sort -n | tail -1) s"
}
burst "one address, one account (an attacker)" one
burst "200 addresses, 200 accounts (a botnet)" many

# 10,000 OAuthClients created at once on a real kube-apiserver (the cluster tier's scale test;
# BENCH_CLUSTER=0 skips it): time until all are Ready, kauth's RSS, and CPU seconds of kauth,
# kube-apiserver and etcd meanwhile.
if [ "${BENCH_CLUSTER:-1}" != 0 ]; then
  echo "== 10,000 OAuthClients on a real kube-apiserver"
  KAUTH_SCALE_CLIENTS=10000 tests/cluster/run.sh --nocapture bench_scale_ 2>&1 | grep "scale" | grep -v "^test result" || echo "   (the cluster run failed)"
fi
