#!/usr/bin/env bash
# Stops the processes up.sh started (by their pid files) and nothing else.
set -u
STATE=${1:?usage: down.sh STATE_DIR}
for name in apiserver etcd; do
  if [ -f "$STATE/$name.pid" ]; then
    pid=$(cat "$STATE/$name.pid")
    kill "$pid" 2>/dev/null && for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$STATE/$name.pid"
  fi
done
exit 0
