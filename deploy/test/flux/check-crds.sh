#!/usr/bin/env bash
# Checks crds.yaml against a real kube-apiserver: starts etcd and
# kube-apiserver (scripts/kube-env.sh assets) on free loopback ports with the
# flags crates/test-support/src/kube.rs uses, applies the CRDs, creates every
# object of samples/valid.yaml, expects the server to refuse every object of
# samples/invalid.yaml, writes a HelmRelease status through the status
# subresource, then stops everything and removes its temp dir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
HERE=$ROOT/deploy/test/flux
ASSETS=$("$ROOT/scripts/kube-env.sh" assets)
D=$(mktemp -d "${TMPDIR:-/tmp}/glagent-flux-crds-XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$D"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fail() { echo "FAIL: $*" >&2; exit 1; }

cd "$D"
ssl() { openssl "$@" 2>/dev/null; }
ssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=glagent-flux-ca
ssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
echo 'subjectAltName=IP:127.0.0.1' >san.ext
ssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out apiserver.crt
ssl genrsa -out sa.key 2048 && ssl rsa -in sa.key -pubout -out sa.pub
echo 'flux-check-token,admin,admin,"system:masters"' >tokens.csv

ETCD=$(port) PEER=$(port) API=$(port)
"$ASSETS/etcd" --name=test --data-dir="$D/etcd" --unsafe-no-fsync --listen-metrics-urls=http://127.0.0.1:0 \
  --listen-client-urls="http://127.0.0.1:$ETCD" --advertise-client-urls="http://127.0.0.1:$ETCD" \
  --listen-peer-urls="http://127.0.0.1:$PEER" --initial-advertise-peer-urls="http://127.0.0.1:$PEER" \
  --initial-cluster="test=http://127.0.0.1:$PEER" >etcd.log 2>&1 &
pids+=($!)
"$ASSETS/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$API" --insecure-port=0 --tls-cert-file=apiserver.crt --tls-private-key-file=apiserver.key \
  --client-ca-file=ca.crt --token-auth-file=tokens.csv --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-account-signing-key-file=sa.key \
  --service-account-key-file=sa.pub --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none >apiserver.log 2>&1 &
pids+=($!)
k() { kubectl --server="https://127.0.0.1:$API" --certificate-authority="$D/ca.crt" --token=flux-check-token "$@"; }
for _ in $(seq 90); do k get --raw /readyz >/dev/null 2>&1 && break; sleep 1; done
k get --raw /readyz >/dev/null || { tail -20 apiserver.log >&2; fail "kube-apiserver not ready"; }
echo "== kube-apiserver $("$ASSETS/kube-apiserver" --version | cut -d' ' -f2) on 127.0.0.1:$API"

k apply -f "$HERE/crds.yaml"
k wait --for=condition=Established --timeout=60s crd --all
k create namespace flux-system >/dev/null
echo "== samples/valid.yaml"
k create -f "$HERE/samples/valid.yaml"
k get -n flux-system gitrepo,helmrepo,hc,ks,hr
[ "$(k get -n flux-system fluxcd -o name | wc -l)" = 5 ] || fail "category fluxcd does not list the 5 objects"
[ "$(k get -n flux-system hr gitlab-agent -o jsonpath='{.spec.values.config.replicas}')" = 2 ] || fail "spec.values pruned"

echo "== status subresource"
k patch -n flux-system hr gitlab-agent --subresource=status --type=merge -p '{"status":{"observedGeneration":1,
  "conditions":[{"type":"Ready","status":"True","reason":"InstallSucceeded","message":"Helm install succeeded",
  "lastTransitionTime":"2025-01-01T00:00:00Z"}]}}'
k get -n flux-system hr gitlab-agent
[ "$(k get -n flux-system hr gitlab-agent -o jsonpath='{.status.conditions[0].status}')" = True ] || fail "status not stored"

echo "== samples/invalid.yaml (server-side validation only; each must be refused)"
out=$(k create --validate=false -f "$HERE/samples/invalid.yaml" 2>&1) && fail "kubectl create succeeded"
echo "$out"
! grep -q ' created$' <<<"$out" || fail "an invalid object was accepted"
[ "$(grep -c 'is invalid\|no matches for kind' <<<"$out")" = "$(grep -c '^kind:' "$HERE/samples/invalid.yaml")" ] \
  || fail "not every invalid object was refused"
echo "OK: CRDs accepted, valid objects created, invalid objects refused"
