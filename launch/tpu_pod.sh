#!/usr/bin/env bash
# The same set-up and command on every worker of a Cloud TPU VM pod (JAX detects the pod from the TPU metadata).
#   launch/tpu_pod.sh NAME ZONE [--project P] [--repo DIR] [--setup CMD] [--num_workers N] [--dry_run] -- CMD...
# --repo: the project's folder on the workers (default: ~/sovits2-jax); --setup runs first (default: the venv set-up);
# --num_workers only labels the dry-run listing. The default set-up installs TPU JAX (libtpu).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: launch/tpu_pod.sh NAME ZONE [options] -- CMD..." >&2; exit 2; }
name=$1 zone=$2; shift 2
project="" repo="~/sovits2-jax" setup="bash launch/setup_venv.sh --accelerator tpu" workers="" dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --project) project=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    --setup) setup=$2; shift 2 ;;
    --num_workers) workers=$2; shift 2 ;;
    --dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "error: give the command after --" >&2; exit 2; }
remote="cd $repo && $setup && PYTHONUNBUFFERED=1 $(printf '%q ' "$@")"
cmd=(gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$remote")
[ -n "$project" ] && cmd+=(--project "$project")
if [ "$dry_run" = 1 ]; then
  echo "gcloud: $(printf '%q ' "${cmd[@]}")"
  echo "every worker runs: $remote"
  echo "coordinator: worker 0 (jax.distributed Cloud TPU detection); rank = TPU worker id"
  if [ -n "$workers" ]; then
    for ((rank = 0; rank < workers; rank++)); do echo "[rank $rank] worker $rank: $remote"; done
  fi
  exit 0
fi
exec "${cmd[@]}"
