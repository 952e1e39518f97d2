#!/usr/bin/env bash
# Set up kgclip on a fresh Debian machine: system packages, then a pinned virtual env in .venv.
#   bash scripts/setup.sh                 # the tool: harvest and train (torch, open_clip)
#   bash scripts/setup.sh --dev           # plus the test and lint tools, and Chromium for the browser test
#   bash scripts/setup.sh --harvest-only  # harvesting alone, without torch
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(wordnet-base wordnet-sense-index tuxpaint-stamps-default gcompris-qt-data)
LOCK=requirements/train.txt
case "${1:-}" in
  --dev) LOCK=requirements/dev.txt; DEBIAN_PACKAGES+=(chromium chromium-driver) ;;  # the viewer's browser test
  --harvest-only) LOCK=requirements/runtime.txt ;;
  "") ;;
  *) echo "setup: unknown option $1 (--dev, --harvest-only)" >&2; exit 2 ;;
esac

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: kgclip needs Python >= 3.11 ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$LOCK"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "setup: ready (.venv, $(.venv/bin/kgclip --version))"
