#!/usr/bin/env bash
# Installs what the test suite needs besides the Kubernetes binaries
# (scripts/kube-env.sh): Debian packages and a Python venv with the real
# REST clients. Idempotent; the venv is cached.
set -euo pipefail
CACHE=${GLAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glagent}

need=()
for p in git postgresql python3-venv ca-certificates; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[deps] apt-get install ${need[*]}" >&2
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

VENV=$CACHE/venv
REQS="python-gitlab>=8,<9 kubernetes>=31"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.reqs" 2>/dev/null)" != "$REQS" ]; then
  echo "[deps] creating $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # REQS is a list of requirements
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQS
  echo "$REQS" > "$VENV/.reqs"
fi
