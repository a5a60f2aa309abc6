#!/usr/bin/env bash
# Follows one worker's log of a run (worker 0 holds the metrics and progress lines).
#
#   PROJECT=my-proj ZONE=us-central2-b TPU_NAME=ardm RUN_NAME=cifar10 launch/tpu/logs.sh
#
# Optional: WORKER=3 (another worker, e.g. to read its error), LINES=200, FOLLOW=0 (print and return).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require PROJECT ZONE TPU_NAME RUN_NAME
worker=${WORKER:-0}
follow=$([[ "${FOLLOW:-1}" == 1 ]] && echo "-f" || echo "")
echo "log of run '$RUN_NAME' on worker $worker of '$TPU_NAME'"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(tpu_flags) --worker="$worker" --command \
  "tail -n ${LINES:-50} $follow ~/ardm_logs/$RUN_NAME.log"
