#!/usr/bin/env bash
# Copy a finished run's results from worker 0 (where process 0 writes them) to this machine.
#
#   launch/pull.sh --tpu_name=NAME --zone=ZONE --project=PROJECT --remote_dir=/mnt/gcs/runs/X \
#       --local_dir=runs/X [--files="summary.json metrics.jsonl"] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
FILES="${FILES:-summary.json metrics.jsonl}"
parse_flags "tpu_name zone project remote_dir local_dir files" "$@"
require TPU_NAME ZONE PROJECT REMOTE_DIR LOCAL_DIR
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")
SOURCES=()
for f in $FILES; do
  SOURCES+=("$TPU_NAME:$REMOTE_DIR/$f")
done
run mkdir -p "$LOCAL_DIR"
run gcloud compute tpus tpu-vm scp "${SOURCES[@]}" "$LOCAL_DIR/" "${GC[@]}" --worker=0
