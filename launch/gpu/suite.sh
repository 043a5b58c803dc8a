#!/usr/bin/env bash
# The GPU suite: parity of every component on CUDA against PyTorch on CUDA, the GPU tests and the headline
# benchmarks, as one run writing OUT/gpu_suite.json and printed lines (about 8 minutes on one H100/H200).
#   launch/gpu/suite.sh [--wheels wheels/gpu] [--out out/gpu_suite] [--cpu]
# On the GPU host: installs the wheels from fetch_wheels.sh offline into .venv-gpu, a venv that sees the host's
# CUDA JAX and PyTorch (--system-site-packages). --cpu: the same code on this machine's CPU at a small size
# (./.venv from make setup), for checking the suite itself where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
wheels=wheels/gpu out=out/gpu_suite cpu=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --cpu) cpu=1; shift ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$cpu" = 1 ]; then
  bash launch/setup_venv.sh
  py=.venv/bin/python device=cpu size=small
else
  py=.venv-gpu/bin/python device=gpu size=release
  if [ ! -x "$py" ]; then
    [ -d "$wheels" ] || { echo "error: no wheel folder $wheels (run launch/gpu/fetch_wheels.sh where PyPI is reachable)" >&2; exit 2; }
    "${PYTHON:-python3}" -m venv --system-site-packages .venv-gpu
    # the list is the complete closure from fetch_wheels.sh: no resolution (the references declare CUDA pins)
    "$py" -m pip install -q --no-index --no-deps --find-links "$wheels" -r "$wheels/requirements.txt"
    "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e .
  fi
  "$py" -c "import jax, torch; assert jax.devices('gpu') and torch.cuda.is_available(), 'no CUDA device visible'"
fi
status=0
if [ "$device" = gpu ]; then
  "$py" -m pytest -q -m gpu tests/gpu --junitxml="$out/tests_gpu.xml" 2>&1 | tee "$out/tests_gpu.log" || status=1
fi
"$py" -m sovits2_jax.bench.gpu --device="$device" --size="$size" --out="$out/gpu_suite.json" 2>&1 \
  | tee "$out/bench_gpu.log" || status=1
echo "suite: results in $out/gpu_suite.json (exit $status)"
exit $status
