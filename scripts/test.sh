#!/usr/bin/env bash
# Runs every check and test of glagent on a Debian machine. Installs what the
# tests need (idempotent, cached under ~/.cache/glagent), starts PostgreSQL for
# the run and stops it afterwards.
#
#   scripts/test.sh            everything: fmt, clippy, all tests
#   scripts/test.sh -- ARGS    extra arguments for `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

export GLAGENT_CACHE=${GLAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glagent}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$GLAGENT_CACHE/target}
mkdir -p "$GLAGENT_CACHE"

scripts/install-test-deps.sh
scripts/kube-env.sh install
KUBEBUILDER_ASSETS=$(scripts/kube-env.sh assets)
export KUBEBUILDER_ASSETS
export GLAGENT_PYTHON=$GLAGENT_CACHE/venv/bin/python
export GLAGENT_HELM3=$GLAGENT_CACHE/bin/helm3 GLAGENT_HELM4=$GLAGENT_CACHE/bin/helm4

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
postgres_start
trap postgres_stop EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo xtask tidy"
cargo xtask tidy
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build --bins"
cargo build --workspace --bins --locked
echo "== cargo test"
shift_args=()
if [ "${1:-}" = "--" ]; then shift; shift_args=("$@"); fi
cargo test --workspace --locked "${shift_args[@]}"
echo "== agentk OCI image (static binary, reproducible, runs from its root filesystem)"
cargo xtask image --verify
