#!/usr/bin/env bash
# Multi-node GPU training without a cluster manager: run this once on every node, each with its own
# PROCESS_ID, all with the same COORDINATOR_ADDRESS (node 0's address and a free port) and NUM_PROCESSES.
#
#   # on node 0 (10.0.0.1):
#   COORDINATOR_ADDRESS=10.0.0.1:1234 NUM_PROCESSES=2 PROCESS_ID=0 \
#     launch/gpu/multinode_manual.sh --config experiments/cifar10.py --workdir /shared/cifar10
#   # on node 1: the same with PROCESS_ID=1
#
# Each process drives all GPUs of its node. The workdir must be shared by all nodes. A process whose peers
# never arrive gives up after jax.distributed's 5-minute initialisation timeout.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID
if (($# == 0)); then
  echo "usage: COORDINATOR_ADDRESS=HOST:PORT NUM_PROCESSES=N PROCESS_ID=I $0 --config FILE --workdir DIR" >&2
  exit 2
fi
echo "process $PROCESS_ID of $NUM_PROCESSES on $(hostname), coordinator $COORDINATOR_ADDRESS"
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
run python -m ardm_jax.cli train --coordinator_address "$COORDINATOR_ADDRESS" --num_processes "$NUM_PROCESSES" \
  --process_id "$PROCESS_ID" "$@"
