#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian bookworm's source package (no Docker, no
# internet but the package registries), once; the binary is cached outside the repo.
# Prints the binary's path. What it does and why: tests/cluster/README.md.
set -euo pipefail
VERSION=1.20.2
CACHE=${KAUTH_CACHE:-$HOME/.cache/kauth}
BIN="$CACHE/kube-apiserver-$VERSION"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
here=$(cd "$(dirname "$0")" && pwd)

log() { echo "build-apiserver: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
"$here/../ensure-packages.sh" golang-go etcd-server openssl dpkg-dev golang-github-modern-go-reflect2-dev \
  golang-github-json-iterator-go-dev

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private sources list: the system's apt configuration stays untouched.
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial"
cat >"$work/sources.list" <<'LIST'
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
LIST
apt_opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache")
log "fetching Debian's kubernetes source package"
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only kubernetes >&2 2>/dev/null)
mkdir -p "$work/gopath/src/k8s.io"
tar -xzf "$work"/kubernetes_*.orig.tar.gz -C "$work/gopath/src/k8s.io"
mv "$work/gopath/src/k8s.io/kubernetes-$VERSION" "$work/gopath/src/k8s.io/kubernetes"
tree="$work/gopath/src/k8s.io/kubernetes"
cd "$tree"

log "fix 1: vendor/modules.txt for Go >= 1.17"
python3 "$here/fix-modules-txt.py" vendor/modules.txt

log "fix 3: reflect2 1.0.2 and json-iterator 1.1.12 from Debian (1.0.1 faults under Go >= 1.18)"
for pair in "github.com/modern-go/reflect2 v1.0.1 v1.0.2" "github.com/json-iterator/go v1.1.10 v1.1.12"; do
  set -- $pair
  rm -rf "vendor/$1"
  cp -r "/usr/share/gocode/src/$1" "vendor/$1"
  find "vendor/$1" -name '*_test.go' -delete
  sed -i "s#$1 $2#$1 $3#g" go.mod vendor/modules.txt
  for f in staging/src/k8s.io/*/go.mod; do sed -i "s#$1 $2#$1 $3#g" "$f"; done
done

export GOPATH="$work/gopath" GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 GOCACHE="$work/gocache"
log "fix 2: generating pkg/generated/openapi (openapi-gen)"
go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
# Tagged packages: the tag sits in doc.go or on single types (resource.Quantity), so read every file.
pkgs=$(grep -rl --include='*.go' --exclude='*_test.go' '+k8s:openapi-gen=' pkg staging/src/k8s.io vendor 2>/dev/null \
  | xargs -n1 dirname | sort -u \
  | sed -e 's#^staging/src/#vendor/#' -e 's#^vendor/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' | paste -sd, -)
(cd "$work/gopath/src/k8s.io/kubernetes" && GO111MODULE=off GOFLAGS= "$work/openapi-gen" \
  --input-dirs "$pkgs" --output-package k8s.io/kubernetes/pkg/generated/openapi \
  --output-base "$work/gopath/src" -O zz_generated.openapi \
  --go-header-file hack/boilerplate/boilerplate.generatego.txt \
  --report-filename /dev/null >&2)

log "building kube-apiserver (a few minutes on 2 cores)"
go build -o "$work/kube-apiserver" ./cmd/kube-apiserver
mkdir -p "$CACHE"
mv "$work/kube-apiserver" "$BIN"
echo "$BIN"
