#!/usr/bin/env bash
# make test-replicas: the replica tier. Three kauth standalone replicas on one throwaway
# PostgreSQL behind HAProxy (Debian's; installed here when missing), driven by
# tests/replicas.rs. It reuses the debug build of `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/setup.sh
tests/ensure-packages.sh haproxy
exec tests/postgres/run.sh ${CARGO:-cargo} test --test replicas -- --ignored --test-threads=1 "$@"
