#!/usr/bin/env bash
# N processes on this machine as one JAX job on CPU devices:  launch/local.sh -n 2 -- CMD ARGS...
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m sovits2_jax.cluster.launch_local "$@"
