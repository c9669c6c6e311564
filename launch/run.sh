#!/usr/bin/env bash
# Run one command (normally one training run) on all workers of a TPU VM at once, stream the
# output here, and store it: LOG_DIR/all-workers.log here, and one log per worker
# (~/logs/RUN_NAME/<hostname>.log on each worker, copied back into LOG_DIR at the end).
#
#   launch/run.sh --tpu_name=NAME --zone=ZONE --project=PROJECT --run_name=RUN \
#       [--log_dir=runs/tpu_logs/RUN] [--env KEY=VALUE ...] [--dry-run] -- COMMAND ARGS...
#
# e.g. -- python3 -m jaxsparse.train --config=configs/paper.py:size=162m \
#         --workdir=/mnt/gcs/runs/162m --distributed=on
# The command runs in ~/jaxsparse with ~/venv active and the --env variables exported; every
# worker starts it, and jax.distributed.initialize() joins them into one job. Exit status: the
# command's (non-zero if it failed on any worker).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "tpu_name zone project run_name log_dir env" "$@"
require TPU_NAME ZONE PROJECT RUN_NAME
[[ "$RUN_NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*$ && "$RUN_NAME" != *..* ]] \
  || die "--run_name=$RUN_NAME: expected letters, digits, '.', '_', '-', '/'"
((${#ARGS[@]} > 0)) || die "no command: give it after --, e.g. -- python3 -m jaxsparse.train ..."
LOG_DIR="${LOG_DIR:-runs/tpu_logs/$RUN_NAME}"
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")

REMOTE="set -o pipefail; cd ~/jaxsparse && . ~/venv/bin/activate && mkdir -p ~/logs/$RUN_NAME"
for kv in "${ENVS[@]}"; do
  REMOTE+=" && export $(quote "$kv")"
done
REMOTE+=" && $(quote "${ARGS[@]}") 2>&1 | tee -a ~/logs/$RUN_NAME/\$(hostname).log"

run mkdir -p "$LOG_DIR"
status=0
run_logged "$LOG_DIR/all-workers.log" \
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GC[@]}" --worker=all --command="$REMOTE" \
  || status=$?
run gcloud compute tpus tpu-vm scp "$TPU_NAME:logs/$RUN_NAME/*.log" "$LOG_DIR/" "${GC[@]}" \
  --worker=all || echo "warning: could not copy the per-worker logs" >&2
exit "$status"
