#!/usr/bin/env bash
# Multi-node GPU without SLURM: run this on every node with its own --node_rank.
#   launch/gpu_multinode.sh --coordinator HOST:PORT --num_nodes N --node_rank R [--procs_per_node P]
#       [--gpus_per_node G] [--dry_run] -- CMD...
# P=1 (default): one process per node drives all its G GPUs. P=G: one process per GPU (CUDA_VISIBLE_DEVICES).
# Global rank = R * P + local index; node 0 hosts the coordinator (HOST must be node 0's address, PORT and
# PORT+1 free there). NCCL defaults below are written down so they can be changed in one place.
set -euo pipefail
cd "$(dirname "$0")/.."
coordinator="" num_nodes="" node_rank="" procs=1 gpus=8 dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) coordinator=$2; shift 2 ;;
    --num_nodes) num_nodes=$2; shift 2 ;;
    --node_rank) node_rank=$2; shift 2 ;;
    --procs_per_node) procs=$2; shift 2 ;;
    --gpus_per_node) gpus=$2; shift 2 ;;
    --dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in coordinator num_nodes node_rank; do
  [ -n "${!v}" ] || { echo "error: --$v is required" >&2; exit 2; }
done
[ $# -gt 0 ] || { echo "error: give the command after --" >&2; exit 2; }
if [ "$procs" != 1 ] && [ "$procs" != "$gpus" ]; then
  echo "error: --procs_per_node must be 1 or --gpus_per_node ($gpus)" >&2; exit 2
fi
# NCCL / XLA defaults (override by exporting them before the call)
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-^lo,docker}
export NCCL_IB_DISABLE=${NCCL_IB_DISABLE:-0}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-1}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export PYTHONUNBUFFERED=1
total=$((num_nodes * procs))
pids=()
for ((i = 0; i < procs; i++)); do
  rank=$((node_rank * procs + i))
  env_vars=(SOVITS2_COORDINATOR="$coordinator" SOVITS2_NUM_PROCESSES="$total" SOVITS2_PROCESS_ID="$rank")
  if [ "$procs" != 1 ]; then env_vars+=(CUDA_VISIBLE_DEVICES="$i"); fi
  if [ "$dry_run" = 1 ]; then
    echo "[rank $rank] node $node_rank env: ${env_vars[*]} NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME command: $*"
    continue
  fi
  env "${env_vars[@]}" "$@" &
  pids+=($!)
done
[ "$dry_run" = 1 ] && { echo "coordinator: $coordinator (node 0), $total processes in all"; exit 0; }
# one local process failing stops the others on this node (the other nodes follow through the heartbeat timeout)
status=0
while [ ${#pids[@]} -gt 0 ]; do
  if wait -n "${pids[@]}"; then :; else status=$?; kill "${pids[@]}" 2>/dev/null || true; break; fi
  alive=(); for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done; pids=("${alive[@]}")
done
wait || true
exit $status
