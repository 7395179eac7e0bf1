#!/usr/bin/env bash
# Create the venvs of the actor peers (Pykka, Thespian) that benchmarks/actors.py --peers
# runs on the same work as ActorStage (never telepipe dependencies).
#
#   bash benchmarks/peers/actors/setup.sh          # idempotent; re-run to repair
#
# The venvs live at .venv-peers/pykka and .venv-peers/thespian (gitignored).
set -euo pipefail
PYKKA_VERSION="${PYKKA_VERSION:-4.5.0}"
THESPIAN_VERSION="${THESPIAN_VERSION:-4.0.1}"
root="$(cd "$(dirname "$0")/../../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
for peer in "pykka==$PYKKA_VERSION" "thespian==$THESPIAN_VERSION"; do
  name="${peer%%==*}"
  venv="$root/.venv-peers/$name"
  if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q "$peer"
  "$venv/bin/python" -c "import $name; from importlib.metadata import version; print('$name', version('$name'), 'in $venv')"
done
