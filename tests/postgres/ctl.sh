#!/usr/bin/env bash
# Stops (`stop`) the PostgreSQL that up.sh started in DIR, or starts it again (`start`) on the
# same port with the same data: a database outage and its end, for the fault tests.
set -euo pipefail
dir=${1:?usage: ctl.sh DIR stop|start}
action=${2:?usage: ctl.sh DIR stop|start}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  as_owner=(runuser -u postgres --)
fi
case $action in
  stop) "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null ;;
  start) "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$(cat "$dir/options")" start >/dev/null ;;
  *) echo "usage: ctl.sh DIR stop|start" >&2; exit 2 ;;
esac
