#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on 127.0.0.1 in DIR (created) and prints its URL.
# Stop it with tests/postgres/down.sh DIR (tests/postgres/ctl.sh DIR stop|start pauses it). fsync is off (tests) unless KAUTH_PG_FSYNC=on. PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user that Debian's package creates.
set -euo pipefail
dir=${1:?usage: up.sh DIR}
"$(dirname "$0")/../ensure-packages.sh" postgresql python3
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL server binaries not found (or set KAUTH_TEST_POSTGRES_URL)" >&2
  exit 1
fi
as_owner=()
if [ "$(id -u)" = 0 ]; then
  as_owner=(runuser -u postgres --)
fi
mkdir -p "$dir"
chmod 0777 "$dir"
data="$dir/data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_owner[@]}" "$bin/initdb" -D "$data" -U kauth --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
# Kept for ctl.sh, which stops the server and starts it again on the same port.
echo "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=${KAUTH_PG_FSYNC:-off}" >"$dir/options"
"${as_owner[@]}" "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 -o "$(cat "$dir/options")" start >/dev/null
echo "postgres://kauth@127.0.0.1:$port/postgres"
