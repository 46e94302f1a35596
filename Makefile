# kauth — common tasks. `make test` is what CI runs.
CARGO ?= cargo

.PHONY: run test lint crds check-crds bench fmt

run: ## Serve the bundled examples on 127.0.0.1:8080 without a cluster
	$(CARGO) run --release -- standalone --manifests examples/

test: ## Format check, lints, and every test tier that needs no cluster
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets

lint:
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

crds: ## Regenerate crds/ from the Rust types
	$(CARGO) run -q -- crds > crds/kauth.dev.yaml

bench: ## Throughput and latency of the token and introspection endpoints (needs wrk)
	bench/run.sh
