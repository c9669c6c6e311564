#!/usr/bin/env bash
# Stop training, or stop the TPU VM.
#
#   launch/stop.sh --tpu_name=NAME --zone=ZONE --project=PROJECT [--train_only=1] [--dry-run]
#
# --train_only=1: send SIGTERM to the trainers on every worker (they save a checkpoint and
#   exit; rerunning the same command resumes). Otherwise: `tpu-vm stop` (TPUs created through a
#   queued resource may not support stop; use launch/delete.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
TRAIN_ONLY="${TRAIN_ONLY:-0}"
parse_flags "tpu_name zone project train_only" "$@"
require TPU_NAME ZONE PROJECT
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")
if [[ "$TRAIN_ONLY" == 1 ]]; then
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GC[@]}" --worker=all \
    --command="pkill -TERM -f 'python3 -m jaxsparse.train' || true"
else
  run gcloud compute tpus tpu-vm stop "$TPU_NAME" "${GC[@]}"
fi
