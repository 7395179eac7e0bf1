#!/usr/bin/env bash
# Create the PyFlink venv used by the Flink reference harness (never a telepipe dependency).
#
#   bash benchmarks/peers/flink/setup.sh          # idempotent; re-run to repair
#
# The venv lives at .venv-peers/flink (gitignored). PyFlink needs a JDK (11/17/21) on PATH
# or JAVA_HOME; these machines have OpenJDK 17 (apt-get install -y openjdk-17-jre-headless).
set -euo pipefail
FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="$root/.venv-peers/flink"

if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  echo "setup.sh: no java on PATH and no JAVA_HOME: install a JDK 17 (apt-get install -y openjdk-17-jre-headless)" >&2
  exit 1
fi

if ! command -v javac >/dev/null 2>&1; then
  echo "setup.sh: warning: no javac: run_flink.py needs it for the Java-API part (or --no-java)" >&2
fi

# apache-flink 2.x ships cp39..cp312 wheels, so the project's Python 3.12 is used.
python="${PYTHON:-$("$root/.ci/find-python")}"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "apache-flink==$FLINK_VERSION"
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
print("pyflink", m.version("apache-flink"), "libraries", m.version("apache-flink-libraries"))
PY
java -version 2>&1 | head -1
