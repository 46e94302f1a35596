#!/usr/bin/env bash
# tests/setup.sh: what every test command needs before cargo runs, installed when missing (or
# named exactly when it cannot be): Rust at least the version Cargo.toml names, its rustfmt
# and clippy components, and a C compiler (aws-lc-rs and SQLite build C code). `make test`
# runs it first; the tiers install their own tools on top (tests/ensure-packages.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
if ! command -v cargo >/dev/null; then
  echo "Rust is missing: install rustup (https://rustup.rs), then: rustup toolchain install $want" >&2
  exit 1
fi
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
  echo "rustc $have is older than the $want kauth needs: rustup update (or rustup toolchain install $want)" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then
      echo "installing the Rust component $component (rustup)" >&2
      rustup component add "$component" >&2
    else
      echo "cargo ${component/rustfmt/fmt} is missing: install the $component component of your Rust toolchain" >&2
      exit 1
    fi
  fi
done
command -v cc >/dev/null || tests/ensure-packages.sh gcc libc6-dev make
