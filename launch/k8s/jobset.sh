#!/usr/bin/env bash
# Renders launch/k8s/jobset.yaml and applies it with kubectl (or prints it with --dry_run).
#   launch/k8s/jobset.sh --name NAME --hosts N --image IMAGE [--gpus G] [--port 8476] [--workdir /app]
#       [--max_restarts 0] [--dry_run] -- CMD...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
NAME="" HOSTS="" IMAGE="" GPUS=8 PORT=8476 WORKDIR=/app MAX_RESTARTS=0 dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --hosts) HOSTS=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --gpus) GPUS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --max_restarts) MAX_RESTARTS=$2; shift 2 ;;
    --dry_run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
for v in NAME HOSTS IMAGE; do
  [ -n "${!v}" ] || { echo "error: --${v,,} is required" >&2; exit 2; }
done
[ $# -gt 0 ] || { echo "error: give the command after --" >&2; exit 2; }
RENDEZVOUS_PORT=$((PORT + 1))
# the shell-quoted command as a JSON string (a valid YAML scalar)
COMMAND=$(printf '%q ' "$@" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().strip()))')
export NAME HOSTS IMAGE GPUS PORT RENDEZVOUS_PORT WORKDIR MAX_RESTARTS COMMAND
rendered=$(python3 -c 'import os, string, sys; print(string.Template(sys.stdin.read()).substitute(os.environ))' \
  < "$here/jobset.yaml")
if [ "$dry_run" = 1 ]; then
  echo "$rendered"
  echo "# coordinator: $NAME-workers-0-0.$NAME:$PORT (pod 0), $HOSTS processes"
  for ((rank = 0; rank < HOSTS; rank++)); do
    echo "# [rank $rank] pod $NAME-workers-0-$rank env: SOVITS2_PROCESS_ID=$rank SOVITS2_NUM_PROCESSES=$HOSTS command: $*"
  done
  exit 0
fi
echo "$rendered" | kubectl apply -f -
