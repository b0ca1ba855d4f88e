#!/usr/bin/env bash
# Pushes manifests/ to $PROJECT on $KAS (apps/hello/) and points Flux at it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${KAS:?} ${TOKEN:?} ${PROJECT:?} ${NAMESPACE:?}"
export GIT_SSL_CAINFO=${GLAGENT_CA_CERT:-}
[ -n "$GIT_SSL_CAINFO" ] || unset GIT_SSL_CAINFO
auth="Authorization: Basic $(printf 'oauth2:%s' "$TOKEN" | base64 -w0)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git -c http.extraHeader="$auth" clone --quiet "$KAS/$PROJECT.git" "$work/repo"
mkdir -p "$work/repo/apps/hello"
cp "$here"/manifests/*.yaml "$work/repo/apps/hello/"
git -C "$work/repo" add apps/hello
git -C "$work/repo" -c user.name=example -c user.email=example@example.com commit --quiet -m "Add the hello application"
git -C "$work/repo" -c http.extraHeader="$auth" push --quiet origin HEAD

ca=$(cat "${GLAGENT_CA_CERT:-/dev/null}")
kubectl apply -f - <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: hello-source
  namespace: $NAMESPACE
stringData:
  username: oauth2
  password: $TOKEN
  ca.crt: |
$(printf '%s\n' "$ca" | sed 's/^/    /')
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: hello
  namespace: $NAMESPACE
spec:
  interval: 10m0s
  url: $KAS/$PROJECT.git
  ref:
    branch: main
  secretRef:
    name: hello-source
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: hello
  namespace: $NAMESPACE
spec:
  interval: 10m0s
  path: ./apps/hello
  prune: true
  targetNamespace: $NAMESPACE
  sourceRef:
    kind: GitRepository
    name: hello
YAML
