#!/usr/bin/env bash
# Installs what the benchmarks compare against, outside kgclip's own venv:
#   nltk and pandas (open_clip_train imports it) into .venv (requirements/bench.txt), img2dataset
#   into benchmarks/.venv-peers (it pins packages kgclip does not want, and pulls ~780 MB),
#   nginx to serve the fetch benchmark, and pigz (the dump benchmark times gzip and pigz).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
if ! command -v nginx > /dev/null || ! command -v pigz > /dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx-light pigz
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/bench.txt
[[ -x benchmarks/.venv-peers/bin/img2dataset ]] || {
  python3 -m venv benchmarks/.venv-peers
  benchmarks/.venv-peers/bin/python -m pip install -q --disable-pip-version-check \
    img2dataset==1.47.0 webdataset==0.2.86
}
echo "peers ready: nltk in .venv, img2dataset in benchmarks/.venv-peers, $(nginx -v 2>&1), $(pigz --version 2>&1)"
