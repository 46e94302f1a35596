#!/usr/bin/env bash
# Runs a command with KAUTH_TEST_POSTGRES_URL set: to the given server when it is already set,
# else to a throwaway PostgreSQL on 127.0.0.1 that is stopped and removed afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${KAUTH_TEST_POSTGRES_URL:-}" ]; then
  exec "$@"
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/kauth-pg.XXXXXX")
trap '"$here/down.sh" "$dir"' EXIT
KAUTH_TEST_POSTGRES_URL=$("$here/up.sh" "$dir")
export KAUTH_TEST_POSTGRES_URL
"$@"
