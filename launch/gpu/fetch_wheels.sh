#!/usr/bin/env bash
# Run where the package registries are reachable: puts every wheel the project, its tests and the PyTorch
# references need into DEST, for a CUDA host without network that already has CUDA builds of JAX and PyTorch
# (which are left out, with their CUDA libraries). The versions are this machine's ./.venv (make setup), so the
# GPU host runs what CI tests.
#   launch/gpu/fetch_wheels.sh [--dest wheels/gpu] [--python 3.12] [--platform manylinux2014_x86_64]
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=wheels/gpu python_version=3.12 platform=manylinux2014_x86_64
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest=$2; shift 2 ;;
    --python) python_version=$2; shift 2 ;;
    --platform) platform=$2; shift 2 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/python ] || bash launch/setup_venv.sh
mkdir -p "$dest"
reqs="$dest/requirements.txt"
# everything installed here except the project itself, JAX/PyTorch and their CUDA/accelerator packages
.venv/bin/python -m pip freeze --all --exclude-editable \
  | grep -viE '^(jax|jaxlib|jax-cuda[0-9]+-(plugin|pjrt)|torch|torchaudio|torchvision|triton|nvidia-[a-z0-9-]+|sovits2-jax|pip)==' \
  | grep -v '^-e ' > "$reqs"
echo "$(wc -l < "$reqs") packages -> $dest (Python $python_version, $platform)"
failed=()
while read -r req; do
  [ -n "$req" ] || continue
  if ! .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --dest "$dest" \
      --python-version "$python_version" --platform "$platform" --platform manylinux_2_28_x86_64 \
      --platform linux_x86_64 --platform any "$req" 2>/dev/null; then
    # pure-Python packages published only as sdists: build a wheel here (no compiled code in those)
    .venv/bin/python -m pip wheel -q --no-deps --wheel-dir "$dest" "$req" 2>/dev/null || failed+=("$req")
  fi
done < "$reqs"
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: no wheel for: ${failed[*]}" >&2
  exit 1
fi
echo "done: $(ls "$dest"/*.whl | wc -l) wheels in $dest; copy it next to the repo on the GPU host and run launch/gpu/suite.sh"
