#!/usr/bin/env bash
# Copies this repository's committed HEAD to every worker of the slice and installs it with jax[tpu].
#
#   PROJECT=my-proj ZONE=us-central2-b TPU_NAME=ardm launch/tpu/install.sh
#
# Only committed files travel (git archive), so every worker runs exactly the printed commit. The workdir and
# prepared tfds data must be one directory every worker sees: NFS_SHARE=IP:/share (e.g. a Filestore instance)
# mounts one at /mnt/shared on every worker.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
require PROJECT ZONE TPU_NAME

repo=$(git -C "$(dirname "$0")/../.." rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short HEAD)
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
  echo "warning: uncommitted changes in $repo are NOT copied; commit them first to run them" >&2
fi
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
archive=$tmpdir/ardm_jax.tar.gz
echo "installing ardm_jax at commit $commit on every worker of '$TPU_NAME'"
run git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME":~/ardm_jax.tar.gz $(tpu_flags) --worker=all
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(tpu_flags) --worker=all --command \
  "set -e; rm -rf ~/ardm_jax && mkdir -p ~/ardm_jax ~/ardm_logs && tar -xzf ~/ardm_jax.tar.gz -C ~/ardm_jax \
   && echo $commit > ~/ardm_jax/COMMIT && python3 -m pip install -q -U pip \
   && python3 -m pip install -q -e \"\$HOME/ardm_jax[tpu]\" \
   && python3 -c 'import jax, ardm_jax; print(\"ardm_jax installed with jax\", jax.__version__)'"
if [[ -n "${NFS_SHARE:-}" ]]; then
  # A shared workdir: orbax writes one checkpoint from all hosts and resumes read it back.
  echo "mounting $NFS_SHARE at /mnt/shared on every worker"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" $(tpu_flags) --worker=all --command \
    "sudo apt-get -qq update && sudo apt-get -qq install -y nfs-common && sudo mkdir -p /mnt/shared \
     && (mountpoint -q /mnt/shared || sudo mount -t nfs $NFS_SHARE /mnt/shared) && sudo chmod a+rwx /mnt/shared"
fi
echo "next: RUN_NAME=... launch/tpu/run.sh ardm train --config ... --workdir /mnt/shared/RUN"
