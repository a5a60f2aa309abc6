#!/usr/bin/env bash
# Trains on every GPU of one machine with a single process (JAX drives all local GPUs; no jax.distributed).
#
#   launch/gpu/single_node.sh --config experiments/cifar10.py --workdir runs/cifar10 [--config.KEY=VALUE ...]
#
# Optional: CUDA_VISIBLE_DEVICES=0,1,2,3 (a subset of the GPUs), DRY_RUN=1. Install first with
# `pip install -e ".[gpu]"` (jax[cuda12]). The mesh comes from the config (default: data parallel over all
# GPUs, --config.mesh.fsdp=-1 --config.mesh.data=1 for FSDP); the batch size must divide by the GPU count.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
if (($# == 0)); then
  echo "usage: $0 --config FILE --workdir DIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
if command -v nvidia-smi > /dev/null; then
  echo "GPUs on $(hostname): $(nvidia-smi -L | wc -l) (visible to this run: ${CUDA_VISIBLE_DEVICES:-all})"
else
  echo "warning: nvidia-smi not found; JAX will fall back to the CPU unless a CUDA jaxlib sees GPUs" >&2
fi
# Let XLA overlap collectives with compute, and keep JAX from grabbing 75% of every GPU up front.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
run python -m ardm_jax.cli train "$@"
