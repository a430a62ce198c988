#!/usr/bin/env bash
# Create or refresh the project venv (.venv): torch first, then the project and its dev extras under
# constraints.txt so that nothing replaces torch. Idempotent: when pyproject.toml, constraints.txt and the
# torch spec are unchanged since the last successful run, it returns in well under a second.
#
#   RLHF_PYTHON   interpreter to build the venv from (default: python3)
#   RLHF_VENV     venv folder (default: .venv in the repository)
#   RLHF_TORCH    torch requirement installed first (default: torch==2.13.0, the CPU build on CPU machines).
#                 GPU users: RLHF_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   RLHF_EXTRAS   extras to install (default: dev)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${RLHF_PYTHON:-python3}"
VENV="${RLHF_VENV:-$ROOT/.venv}"
TORCH_SPEC="${RLHF_TORCH:-torch==2.13.0}"
EXTRAS="${RLHF_EXTRAS:-dev}"
STAMP="$VENV/.rlhf-bootstrap"

want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16) $TORCH_SPEC [$EXTRAS]"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/rlhf" ]]; then
    exit 0
fi

echo "bootstrap: preparing $VENV" >&2
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=24" setuptools wheel
# shellcheck disable=SC2086
"${PIP[@]}" install $TORCH_SPEC
# Everything else under the lock; torch is already satisfied, so the constraints cannot replace it.
"${PIP[@]}" install -c "$ROOT/constraints.txt" -e "$ROOT[$EXTRAS]"
"$VENV/bin/python" -m pip check >&2
echo "$want" > "$STAMP"
echo "bootstrap: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
