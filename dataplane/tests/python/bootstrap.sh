#!/usr/bin/env bash
# Create (or refresh) the Python test venv at dataplane/tests/python/.venv from requirements.txt
# (exact pins + hashes; needs only PyPI). Idempotent: does nothing when the venv already holds
# exactly these pins (stamp = sha256 of requirements.txt). Uses CPython 3.11 (`python3`, or $PYTHON).
# Prints the venv's python path on the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3}"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$venv/.meshgate-stamp" && "$(cat "$venv/.meshgate-stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$ver" != "3.11" ]]; then
  echo "bootstrap.sh: need CPython 3.11 (requirements.txt hashes are for cp311), got $ver from $py" >&2
  exit 1
fi
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --require-hashes --no-deps --only-binary=:all: -r "$here/requirements.txt"
"$venv/bin/python" -c 'import mcp, importlib.metadata as m; print("mcp", m.version("mcp"))' >&2
echo "$want" > "$venv/.meshgate-stamp"
echo "$venv/bin/python"
