#!/usr/bin/env bash
# Create a TPU VM through a queued resource and wait until it is ACTIVE.
#
#   launch/create.sh --tpu_name=NAME --zone=ZONE --project=PROJECT \
#       [--accelerator=v4-8] [--runtime=tpu-ubuntu2204-base] [--qr_id=NAME-qr] [--spot=1] \
#       [--wait=1] [--dry-run]
#
# --accelerator: the slice, e.g. v4-8 (one host, 4 chips), v4-32 (4 hosts), v5litepod-16.
# --runtime: the TPU software version for that generation (v4: tpu-ubuntu2204-base;
#   v5e: v2-alpha-tpuv5-lite; v5p: v2-alpha-tpuv5; v6e: v2-alpha-tpuv6e).
# --spot=1 asks for Spot capacity (cheaper, preemptible: the trainer checkpoints on SIGTERM).
# --wait=1 polls the queued resource every 30 s until ACTIVE (exit 1 if FAILED/SUSPENDED).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ACCELERATOR="${ACCELERATOR:-v4-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
SPOT="${SPOT:-0}"
WAIT="${WAIT:-1}"
parse_flags "tpu_name zone project accelerator runtime qr_id spot wait" "$@"
require TPU_NAME ZONE PROJECT
QR_ID="${QR_ID:-${TPU_NAME}-qr}"
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")

CREATE=(gcloud compute tpus queued-resources create "$QR_ID" --node-id="$TPU_NAME" "${GC[@]}"
        --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME")
[[ "$SPOT" == 1 ]] && CREATE+=(--spot)
run "${CREATE[@]}"

DESCRIBE=(gcloud compute tpus queued-resources describe "$QR_ID" "${GC[@]}"
          --format='value(state.state)')
if [[ "$WAIT" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${DESCRIBE[@]}"
  else
    while true; do
      state="$("${DESCRIBE[@]}")"
      echo "queued resource $QR_ID: $state"
      case "$state" in
        ACTIVE) break ;;
        FAILED|SUSPENDED) echo "error: queued resource $QR_ID is $state" >&2; exit 1 ;;
      esac
      sleep 30
    done
  fi
fi
