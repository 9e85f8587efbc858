#!/usr/bin/env bash
# Create bench/.venv (separate from conveyor's own venv) and install the peers plus conveyor.
# Usage, from anywhere:  bash bench/setup.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [[ ! -x bench/.venv/bin/python ]]; then
    "$python" -m venv bench/.venv
fi
bench/.venv/bin/python -m pip install --quiet --upgrade pip
bench/.venv/bin/python -m pip install --quiet -r bench/requirements.txt
bench/.venv/bin/python -m pip freeze --exclude-editable > bench/requirements.lock.txt
echo "bench/.venv ready: bench/.venv/bin/python -m bench --list"
