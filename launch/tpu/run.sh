#!/usr/bin/env bash
# Starts the same command on every worker of the slice, detached, logging to ~/ardm_logs/RUN_NAME.log.
#
#   PROJECT=my-proj ZONE=us-central2-b TPU_NAME=ardm RUN_NAME=cifar10 \
#     launch/tpu/run.sh ardm train --config experiments/cifar10.py --workdir /mnt/shared/cifar10
#
# Every worker must run the command: on a Cloud TPU VM `ardm train` detects the slice and starts
# jax.distributed itself (no flags). The workdir must be shared by all workers (see install.sh); only
# process 0 writes metrics, all processes write their shards of the orbax checkpoints.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require PROJECT ZONE TPU_NAME RUN_NAME
if (($# == 0)); then
  echo "usage: RUN_NAME=name $0 ardm train --config FILE --workdir /mnt/shared/DIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
cmd=$(printf ' %q' "$@")
log="~/ardm_logs/$RUN_NAME.log"
echo "starting on every worker of '$TPU_NAME':$cmd"
echo "log on each worker: $log (follow worker 0 with: RUN_NAME=$RUN_NAME launch/tpu/logs.sh)"
# setsid + nohup + closed stdin: the run outlives the ssh session.
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(tpu_flags) --worker=all --command \
  "mkdir -p ~/ardm_logs && cd ~/ardm_jax && export PATH=\$HOME/.local/bin:\$PATH && \
   (setsid nohup$cmd > $log 2>&1 < /dev/null & echo \$! > ~/ardm_logs/$RUN_NAME.pid) && \
   echo \"worker \$(hostname): pid \$(cat ~/ardm_logs/$RUN_NAME.pid), commit \$(cat COMMIT 2>/dev/null)\""
