#!/usr/bin/env bash
# Deletes the slice (QUEUED=1: the queued resource and its slice). Anything not in a bucket is lost.
#
#   PROJECT=my-proj ZONE=us-central2-b TPU_NAME=ardm launch/tpu/delete.sh
#
# gcloud asks for confirmation; DRY_RUN=1 prints the command only.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require PROJECT ZONE TPU_NAME
if [[ "${QUEUED:-0}" == 1 ]]; then
  echo "deleting queued resource '$TPU_NAME' and its slice in $ZONE (project $PROJECT)"
  run gcloud compute tpus queued-resources delete "$TPU_NAME" $(tpu_flags) --force
else
  echo "deleting TPU VM '$TPU_NAME' in $ZONE (project $PROJECT)"
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" $(tpu_flags)
fi
