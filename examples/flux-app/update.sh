#!/usr/bin/env bash
# Pushes a new message for the ConfigMap: ./update.sh "the message".
set -euo pipefail
: "${KAS:?} ${TOKEN:?} ${PROJECT:?} ${1:?a message}"
export GIT_SSL_CAINFO=${GLAGENT_CA_CERT:-}
[ -n "$GIT_SSL_CAINFO" ] || unset GIT_SSL_CAINFO
auth="Authorization: Basic $(printf 'oauth2:%s' "$TOKEN" | base64 -w0)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -c http.extraHeader="$auth" clone --quiet "$KAS/$PROJECT.git" "$work/repo"
sed -i "s/^  message: .*/  message: $1/" "$work/repo/apps/hello/configmap.yaml"
git -C "$work/repo" -c user.name=example -c user.email=example@example.com commit --quiet -am "New message"
git -C "$work/repo" -c http.extraHeader="$auth" push --quiet origin HEAD
