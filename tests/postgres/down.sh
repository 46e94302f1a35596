#!/usr/bin/env bash
# Stops the PostgreSQL that up.sh started in DIR and removes DIR.
set -euo pipefail
dir=${1:?usage: down.sh DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  as_owner=(runuser -u postgres --)
fi
if [ -f "$dir/data/postmaster.pid" ]; then
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
fi
rm -rf "$dir"
