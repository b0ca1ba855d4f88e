#!/usr/bin/env bash
# Runs in the CI job: applies manifests/ through the agent $AGENT
# (<agent project path>:<agent name>) into $NAMESPACE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${CI_JOB_TOKEN:?} ${GITLAB_HOST:?} ${AGENT:?} ${NAMESPACE:?}"
export KUBECONFIG=$(mktemp)
trap 'rm -f "$KUBECONFIG"' EXIT
glagent ci kubeconfig > "$KUBECONFIG"
kubectl config use-context "$AGENT"
kubectl --namespace "$NAMESPACE" apply -f "$here/manifests/"
kubectl --namespace "$NAMESPACE" get configmap web-settings -o jsonpath='{.data.deployed-by}{"\n"}'
