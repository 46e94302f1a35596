# kauth — common tasks. `make test` is what CI runs.
CARGO ?= cargo

.PHONY: run test test-browser test-cluster test-image test-interop test-replicas image lint crds bench fmt

run: ## Serve the bundled examples on 127.0.0.1:8080 without a cluster
	$(CARGO) run --release -- standalone --manifests examples/

test: ## Format check, lints, and every test tier that needs no cluster (installs what it needs, and a throwaway PostgreSQL)
	tests/setup.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	# The core on its own, with only its own dependencies' features: no I/O compiles there.
	$(CARGO) check -p kauth-core --lib
	tests/postgres/run.sh $(CARGO) test

test-browser: ## Browser tier: headless Chromium signs a person in, and walks the README's quick start (installs chromium and chromium-driver; needs port 8080)
	tests/setup.sh
	tests/ensure-packages.sh chromium chromium-driver curl
	$(CARGO) test --test browser --test quickstart -- --ignored --test-threads=1

test-interop: ## Interop tier: openid-client 6 (FAPI 2.0 relying party, from npm) against kauth standalone and oidc-provider (needs node and npm)
	tests/interop/run.sh

test-replicas: ## Replica tier: three kauth replicas on one PostgreSQL behind HAProxy behave as one provider (installs haproxy)
	tests/replicas/run.sh

test-cluster: ## Cluster tier: against KUBECONFIG, or a local etcd + kube-apiserver it builds and starts
	tests/cluster/run.sh

IMAGE ?=
image: ## The container image from the release binary, without pulling anything (IMAGE=registry/kauth:tag)
	IMAGE=$(IMAGE) tests/image/build.sh

test-image: ## Image tier: builds the image and runs kauth from its root filesystem (as root; installs buildah)
	tests/image/run.sh

lint:
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	$(CARGO) run -q -- crds > crds/kauth.dev.yaml
	cp crds/kauth.dev.yaml charts/kauth/crds/kauth.dev.yaml

bench: ## Throughput and latency of the token and introspection endpoints (needs wrk)
	bench/run.sh
