#!/usr/bin/env bash
# Delete the TPU VM: its queued resource (with --force, which deletes the node first), or with
# --queued=0 a TPU VM created directly. Run directories on the mounted bucket are kept.
#
#   launch/delete.sh --tpu_name=NAME --zone=ZONE --project=PROJECT [--qr_id=NAME-qr] \
#       [--queued=1] [--dry-run]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
QUEUED="${QUEUED:-1}"
parse_flags "tpu_name zone project qr_id queued" "$@"
require TPU_NAME ZONE PROJECT
QR_ID="${QR_ID:-${TPU_NAME}-qr}"
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")
if [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$QR_ID" "${GC[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GC[@]}" --quiet
fi
