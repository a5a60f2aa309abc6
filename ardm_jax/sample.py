"""Sampling and completion (inpainting / infilling) with a trained model, and the policy a budget selects.

Reading inputs and writing results (PNG, text, WAV) is `file_io.py`; the commands are `jobs/sample.py` and
`jobs/inpaint.py`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import ardm, baselines, sharding, upscale
from ardm_jax import objective as objective_lib
from ardm_jax import policy as policy_lib
from ardm_jax.configs import POLICY_FILE
from ardm_jax.policy_file import check_budget_split, global_policy, load_policy_file


def choose_policy(
  model, budget: int | None, naive: bool = False, policy_file: str | None = None, start: int = 0, split: str = "optimal"
) -> np.ndarray:
  """Global steps s * D + t generating, in every stage s, the variables with sigma_s in [start, D).

  No budget: one call per variable and stage. With a budget (the total over all stages): the DP-optimal policy
  from the workdir's policy.json (or --policy FILE); an upscale model divides the total over its stages by
  `split`: 'optimal' (the split with the lowest summed DP cost) or 'equal' (the paper's Table 7); a one-stage
  model ignores it. With `naive` the total is split equally and the steps in each stage are evenly spaced, as in
  the paper. For completion (start > 0) the DP (and the split) is re-run on the stored L_t of the steps that remain.
  """
  check_budget_split(split)
  objective_lib.require_ardm(model.setup.objective, "a parallel policy or completion")
  num_stages, num_steps = model.setup.objective.num_stages, model.spec.num_steps
  remaining = num_steps - start
  if budget is None:
    parts = [np.arange(start, num_steps)] * num_stages
  elif not num_stages <= budget <= num_stages * remaining:
    what = f"the {remaining} steps left to generate" + (f" in each of {num_stages} stages" if num_stages > 1 else "")
    raise ValueError(f"--budget {budget} must be between {num_stages} and {num_stages * remaining}: {what}")
  elif naive:
    parts = [start + policy_lib.naive_policy(remaining, b) for b in policy_lib.equal_split(budget, num_stages)]
  else:
    path = policy_file or os.path.join(model.workdir, POLICY_FILE)
    if not os.path.isfile(path):
      raise ValueError(
        f"no policy file at {path}: run {model.policy_command(budget)} first, or pass --naive for evenly spaced steps"
      )
    pf = load_policy_file(path)
    if len(pf["stages"]) != num_stages or pf["num_dims"] != num_steps:
      raise ValueError(
        f"{path} has {len(pf['stages'])} stage(s) of {pf['num_dims']} steps but the model has "
        f"{num_stages} of {num_steps}; rebuild it with {model.policy_command('B1,B2,...')}"
      )
    if start == 0:
      return global_policy(pf, budget, split).astype(np.int32)
    losses = [np.asarray(st["loss_per_step"], np.float64)[start:] for st in pf["stages"]]
    budgets = (
      policy_lib.split_budget_across_stages(losses, budget)
      if num_stages > 1 and split == "optimal"
      else policy_lib.equal_split(budget, num_stages)
    )
    parts = [start + policy_lib.optimal_policies(L, [b])[b][0] for L, b in zip(losses, budgets)]
  return policy_lib.flatten_stage_policies(parts, num_steps).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("apply_fn", "spec"))
def _generate(params, key, x_init, sigma, policy, observed, *, apply_fn, spec):
  return upscale.generate(apply_fn, params, key, x_init, sigma, policy, spec=spec, observed=observed)


@functools.partial(jax.jit, static_argnames=("apply_fn", "model", "num", "shape"))
def _generate_baseline(params, key, *, apply_fn, model, num, shape):
  if isinstance(model, baselines.ARM):
    return baselines.arm_generate(apply_fn, params, key, num, shape, model=model)
  return baselines.d3pm_generate(apply_fn, params, key, num, shape, model=model)


def sample_baseline(model, num: int, budget: int | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
  """Samples of a baseline (ARM: D calls; D3PM: its T steps, or T' = budget): (items, network calls)."""
  if num < 1:
    raise ValueError(f"--num must be at least 1, got {num}")
  spec = model.spec
  which = objective_lib.with_generation_budget(model.setup.objective, budget, spec.num_steps)
  # Padded to divide the devices like every job's batch; draws are per element, so the first `num` are the same.
  with model.setup.context():
    out = _generate_baseline(
      model.params,
      jax.random.PRNGKey(seed),
      apply_fn=model.setup.apply_fn,
      model=which,
      num=sharding.padded_batch_size(num, model.setup.mesh),
      shape=tuple(spec.shape),
    )
  return sharding.to_host(out)[:num], which.generation_calls(spec.num_steps)


def sample(model, num: int, steps: np.ndarray, seed: int = 0) -> np.ndarray:
  """Unconditional samples [num, *shape] with one network call per policy step.

  Any `num` on any mesh: the batch is padded to divide the devices (`sharding.place_rows`); orders and draws are
  per row, so the samples do not depend on the device count (up to float rounding in the network).
  """
  if num < 1:
    raise ValueError(f"--num must be at least 1, got {num}")
  spec, objective = model.spec, model.setup.objective
  key_order, key_sample = jax.random.split(jax.random.PRNGKey(seed))
  sigma = np.asarray(upscale.sample_stage_orders(key_order, num, objective.num_stages, spec.num_steps))
  x_init = np.zeros((num,) + spec.shape, np.int32)
  return _generate_rows(model, key_sample, x_init, sigma, steps, np.zeros((num,) + spec.shape, bool))


def _generate_rows(model, key, x_init, sigma, steps, observed) -> np.ndarray:
  """`_generate` on host rows placed as one padded batch on the model's mesh; returns the real rows."""
  mesh = model.setup.mesh
  with model.setup.context():
    out = _generate(
      model.params,
      key,
      sharding.place_rows(x_init, mesh),
      sharding.place_rows(sigma, mesh),
      jnp.asarray(steps),
      sharding.place_rows(observed, mesh),
      apply_fn=model.setup.apply_fn,
      spec=model.setup.objective,
    )
  return sharding.to_host(out)[: len(x_init)]


def complete(
  model,
  item: np.ndarray,
  observed: np.ndarray,
  num: int,
  budget: int | None = None,
  naive: bool = False,
  policy_file: str | None = None,
  seed: int = 0,
  split: str = "optimal",
) -> np.ndarray:
  """`num` completions of one partly observed item: observed variables come first in every stage's order.
  `split` divides an upscale model's budget over the stages (see choose_policy)."""
  spec, objective = model.spec, model.setup.objective
  if item.shape != spec.shape or observed.shape != spec.shape:
    raise ValueError(f"input has shape {item.shape} (mask {observed.shape}) but the model takes {spec.shape}")
  num_observed = int(observed.sum())
  if num_observed == spec.num_steps:
    raise ValueError("every position of the input is given: nothing to complete (mark unknown positions)")
  steps = choose_policy(model, budget, naive, policy_file, start=num_observed, split=split)
  key_order, key_sample = jax.random.split(jax.random.PRNGKey(seed))
  num_stages = objective.num_stages
  observed_b = jnp.broadcast_to(jnp.asarray(observed), (num,) + spec.shape)
  observed_rows = jnp.repeat(observed_b.reshape(num, 1, -1), num_stages, axis=1).reshape(num * num_stages, -1)
  sigma = ardm.orders_observed_first(key_order, observed_rows).reshape(num, num_stages, spec.num_steps)
  x_init = jnp.where(observed_b, jnp.asarray(item, jnp.int32), 0)
  return _generate_rows(model, key_sample, np.asarray(x_init), np.asarray(sigma), steps, np.asarray(observed_b))
