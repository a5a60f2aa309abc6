#!/usr/bin/env bash
# Creates a Cloud TPU VM slice, or queues a request for one (QUEUED=1) that Cloud TPU fills when capacity frees.
#
#   PROJECT=my-proj ZONE=us-central2-b TPU_NAME=ardm ACCELERATOR_TYPE=v4-32 \
#     RUNTIME_VERSION=tpu-ubuntu2204-base launch/tpu/create.sh
#
# Optional: QUEUED=1 (queued resource), SPOT=1 (preemptible capacity: the trainer saves on SIGTERM and resumes),
# DRY_RUN=1 (print the gcloud command only).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require PROJECT ZONE TPU_NAME ACCELERATOR_TYPE RUNTIME_VERSION

extra=()
[[ "${SPOT:-0}" == 1 ]] && extra+=(--spot)
if [[ "${QUEUED:-0}" == 1 ]]; then
  echo "queueing a request for $ACCELERATOR_TYPE '$TPU_NAME' in $ZONE (project $PROJECT);" \
       "check with: gcloud compute tpus queued-resources describe $TPU_NAME $(tpu_flags)"
  run gcloud compute tpus queued-resources create "$TPU_NAME" $(tpu_flags) --node-id="$TPU_NAME" \
    --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" "${extra[@]}"
else
  echo "creating TPU VM $ACCELERATOR_TYPE '$TPU_NAME' in $ZONE (project $PROJECT, image $RUNTIME_VERSION)"
  run gcloud compute tpus tpu-vm create "$TPU_NAME" $(tpu_flags) \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
fi
echo "next: launch/tpu/install.sh"
