"""L_t for `ardm policy` from a trained model: estimated on held-out data, or the running estimate saved while
training. A module of its own so that `ardm policy --loss-file` imports none of it (no JAX)."""

from __future__ import annotations

import numpy as np

from ardm_jax import configs, data, held_out, objective, workdir
from ardm_jax.jobs import model_source


def model_losses(args):
  """(losses, stderr or None, num_dims, source description, fingerprint) of the model of --workdir/--model."""
  model_source.enable_compile_cache(args.workdir)
  model = model_source.open_model(args)
  objective.require_ardm(model.setup.objective, "ardm policy")
  num_dims = model.spec.num_steps
  fingerprint = {"step": model.step, "config_hash": model.config_hash, "params": model.params_kind}
  if args.use_tracker:
    losses, counts = workdir.restore_tracker(model)
    if np.any(counts < 2):
      raise ValueError(
        f"the training tracker has fewer than 2 samples for {int(np.sum(counts < 2))} steps; "
        "train longer or estimate on held-out data (drop --use-tracker)"
      )
    fingerprint["lt_source"] = configs.lt_tracker_name(model.config)
    return losses, None, num_dims, f"training tracker at step {model.step}", fingerprint
  items = data.load(model.config.data).eval_items(args.split)
  batch_size = args.batch_size or int(model.config.train.eval_batch_size)
  samples = args.samples or max(16, 65536 // (num_dims * model.setup.objective.num_stages))
  with model.setup.context():
    losses, stderr = held_out.estimate_lt(
      model.setup,
      model.params,
      items,
      samples_per_step=samples,
      batch_size=batch_size,
      seed=args.seed,
      stride=args.stride,
    )
  every = "" if args.stride == 1 else f" at every {args.stride}th step (linearly interpolated between)"
  fingerprint["lt_source"] = f"{args.split}, {samples} samples per step{every}"
  return losses, stderr, num_dims, f"{samples} held-out draws per step on {args.split}{every}", fingerprint
