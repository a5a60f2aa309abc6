#!/usr/bin/env bash
# Sends SIGTERM to a run on every worker: the trainer saves a checkpoint and exits; run.sh with the same
# command resumes it.
#
#   PROJECT=my-proj ZONE=us-central2-b TPU_NAME=ardm RUN_NAME=cifar10 launch/tpu/stop.sh
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require PROJECT ZONE TPU_NAME RUN_NAME
echo "stopping run '$RUN_NAME' (SIGTERM, checkpoint then exit) on every worker of '$TPU_NAME'"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(tpu_flags) --worker=all --command \
  "kill -TERM -\$(cat ~/ardm_logs/$RUN_NAME.pid) && echo \"worker \$(hostname): stopping\""
