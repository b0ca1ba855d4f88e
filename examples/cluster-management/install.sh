#!/usr/bin/env bash
# Runs in the CI job: installs every chart in charts/ through the agent
# `cluster` of $PROJECT into $NAMESPACE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${CI_JOB_TOKEN:?} ${GITLAB_HOST:?} ${PROJECT:?} ${NAMESPACE:?}"
export KUBECONFIG=$(mktemp)
trap 'rm -f "$KUBECONFIG"' EXIT
glagent ci kubeconfig > "$KUBECONFIG"
for chart in "$here"/charts/*/; do
  name=$(basename "$chart")
  helm upgrade --install "$name" "$chart" --namespace "$NAMESPACE" --kube-context "$PROJECT:cluster" --wait=false
done
helm list --namespace "$NAMESPACE" --kube-context "$PROJECT:cluster"
