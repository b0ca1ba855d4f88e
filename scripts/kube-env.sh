#!/usr/bin/env bash
# Provides a real Kubernetes control plane for the test suite:
# kube-apiserver and kube-controller-manager compiled from Debian's
# `kubernetes` source package with Debian's Go, plus Debian's etcd.
#
#   scripts/kube-env.sh install   build once into the cache (idempotent)
#   scripts/kube-env.sh assets    print the directory holding the binaries
#
# The result is a directory in the envtest layout (kube-apiserver, etcd,
# kube-controller-manager), which is what KUBEBUILDER_ASSETS names. A user who
# already has such a directory sets KUBEBUILDER_ASSETS and skips the build.
# Starting and stopping the control plane is the job of the test-support crate.
set -euo pipefail

CACHE=${GLAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glagent}
KUBE_DIR=$CACHE/kube-1.20
SRC=$KUBE_DIR/src
TREE=$SRC/kubernetes
ASSETS=$KUBE_DIR/assets
export GOPATH=$KUBE_DIR/gopath GOCACHE=$KUBE_DIR/gocache
# Kubernetes 1.20 predates module-mode builds of its own tree.
export GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0

say() { echo "[kube-env $(date +%T)] $*" >&2; }

apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

enable_deb_src() {
  local f=/etc/apt/sources.list.d/glagent-deb-src.sources
  [ -f "$f" ] && return 0
  cat >"$f" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
}

fetch_source() {
  [ -d "$TREE/cmd/kube-apiserver" ] && return 0
  enable_deb_src
  mkdir -p "$SRC"
  (cd "$SRC" && apt-get source --download-only kubernetes 2>&1 | grep -v 'unsandboxed' || true)
  (cd "$SRC" && rm -rf kubernetes.tmp && dpkg-source -x kubernetes_*.dsc kubernetes.tmp >/dev/null)
  # The vendored reflect2 1.0.1 dereferences nil under Go >= 1.18 (first
  # custom-object create); Debian's 1.0.2 is the fixed release.
  (cd "$SRC" && apt-get download golang-github-modern-go-reflect2-dev 2>&1 | grep -v 'unsandboxed' || true)
  rm -rf "$SRC/reflect2" && dpkg-deb -x "$SRC"/golang-github-modern-go-reflect2-dev_*.deb "$SRC/reflect2"
  local vend=$SRC/kubernetes.tmp/vendor/github.com/modern-go/reflect2
  rm -f "$vend"/*.go
  cp "$SRC"/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$vend"/
  mv "$SRC/kubernetes.tmp" "$TREE"
}

generate_openapi() {
  # The source tarball ships without the generated OpenAPI definitions.
  local out=pkg/generated/openapi/zz_generated.openapi.go
  [ -f "$out" ] && return 0
  go build -o "$KUBE_DIR/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  local pkgs
  pkgs=$(find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o -type f -name '*.go' -print \
    | sed 's|^\./staging/src|vendor|; s|^\./||' \
    | xargs grep -l '^// *+k8s:' | xargs grep -l '+k8s:openapi-gen=' \
    | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
    | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  "$KUBE_DIR/openapi-gen" --logtostderr -i "$pkgs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$KUBE_DIR/openapi-violations.txt" 2>"$KUBE_DIR/openapi-gen.log"
}

build() {
  mkdir -p "$GOPATH/src/k8s.io" "$ASSETS"
  ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
  cd "$GOPATH/src/k8s.io/kubernetes"
  generate_openapi
  local flags="-s -w" pkg
  # Both copies of the version package must be stamped, or /version says v0.0.0.
  for pkg in component-base/version client-go/pkg/version; do
    pkg=k8s.io/kubernetes/vendor/k8s.io/$pkg
    flags="$flags -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitTreeState=clean"
  done
  local c t
  for c in kube-apiserver kube-controller-manager; do
    [ -x "$ASSETS/$c" ] && continue
    t=$(date +%s)
    go build -ldflags "$flags" -o "$ASSETS/$c.tmp" "./cmd/$c"
    mv "$ASSETS/$c.tmp" "$ASSETS/$c"
    say "built $c in $(( $(date +%s) - t ))s"
  done
  ln -sfn "$(command -v etcd)" "$ASSETS/etcd"
}

install() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ] && return 0
    say "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd"; exit 1
  fi
  if [ -x "$ASSETS/kube-apiserver" ] && [ -x "$ASSETS/kube-controller-manager" ] && [ -e "$ASSETS/etcd" ]; then
    return 0
  fi
  apt_install golang-go etcd-server dpkg-dev openssl ca-certificates
  fetch_source
  build
}

case "${1:-}" in
  install) install ;;
  assets) echo "${KUBEBUILDER_ASSETS:-$ASSETS}" ;;
  *) echo "usage: $0 install|assets" >&2; exit 2 ;;
esac
