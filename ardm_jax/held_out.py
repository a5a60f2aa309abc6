"""Held-out evaluation, used by the trainer (train.eval_every, the final test) and by the `ardm eval` and
`ardm policy` jobs: bits/dim of the stochastic bound averaged over items and passes with its standard error, and
the per-step losses L_t the DP policies are built from.
"""

from __future__ import annotations

import functools
import json
import os
import time

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import ardm, baselines, objective, sharding, upscale


@functools.partial(jax.jit, static_argnames=("apply_fn", "spec", "exact"))
def _eval_bpd(params, batch, key, policy_P, *, apply_fn, spec, exact):
  """Per-example bits/dim: the model's bound (no policy; exact for the ARM baseline), the one-call policy
  estimator, or the exact policy NLL."""
  num_dims = int(np.prod(batch.shape[1:]))
  if policy_P is None and exact:  # D3PM baseline: every one of its T steps (see make_eval_fn)
    nll = baselines.d3pm_terms_every_step(apply_fn, params, batch, key, model=spec)
  elif policy_P is None:
    nll = objective.loss_terms(spec, apply_fn, params, batch, key, t_sampling="uniform")["nll"]
  elif exact:
    sigma = upscale.sample_stage_orders(key, batch.shape[0], spec.num_stages, num_dims)
    nll = -upscale.policy_log_likelihood(apply_fn, params, batch, sigma, policy_P, spec=spec)
  else:
    nll = upscale.policy_elbo_terms(apply_fn, params, batch, key, policy_P, spec=spec)["nll"]
  return ardm.bits_per_dim(nll, num_dims)


def make_eval_fn(setup, policy: np.ndarray | None = None, exact: bool = False):
  """Per-example bits/dim as f(params, batch, key); params are never donated (the caller keeps them).

  A policy is global (steps s * D + t over all stages, see sample.choose_policy). With a policy, the default is
  the one-call estimator (one random policy step per item); `exact` instead runs all len(policy) calls for one
  random order per item and stage: the same expectation, far lower variance, and with the same seed two policies
  see the same orders (a paired comparison). The policy is a traced argument, so policies of equal length share
  one compilation. Baselines take no policy: their generation steps are part of the model (for D3PM, evaluate
  `dataclasses.replace(setup, objective=objective.with_generation_budget(...))`); for D3PM `exact` sums the terms
  of all its T steps (T calls, one mask draw each) instead of drawing one step.
  """
  if policy is not None:
    objective.require_ardm(setup.objective, "evaluation under a parallel policy (--budget)")
  if exact and policy is None and not isinstance(setup.objective, baselines.D3PMAbsorbing):
    raise ValueError(
      "exact evaluation needs a policy (--budget)"
      + ("; the ARM's NLL is always exact" if isinstance(setup.objective, baselines.ARM) else "")
    )
  policy_P = None
  if policy is not None:
    policy_P = jnp.asarray(upscale.validate_policy(policy, setup.spec.num_steps, setup.objective.num_stages))
  return functools.partial(_call_eval, policy_P=policy_P, apply_fn=setup.apply_fn, spec=setup.objective, exact=exact)


def _call_eval(params, batch, key, *, policy_P, apply_fn, spec, exact):
  return _eval_bpd(params, batch, key, policy_P, apply_fn=apply_fn, spec=spec, exact=exact)


def evaluate_params(
  setup,
  params,
  items: np.ndarray,
  *,
  passes: int,
  batch_size: int,
  seed: int,
  policy: np.ndarray | None = None,
  exact: bool = False,
  eval_fn=None,
  log_every_s: float = 30.0,
) -> dict:
  """Each item gets `passes` independent estimates, in batches of `batch_size` items.

  Any batch size works on any mesh: every batch (the last one may be shorter) is padded to divide the devices
  (`sharding.place_rows`) and the padding is ignored. The items, their batches and keys depend only on
  `batch_size` and `seed`, and orders and steps are drawn per row, so the result does not depend on the device
  count (up to float rounding). Reports the mean over items of the per-item average and its standard error
  across items (this covers both the estimator noise and the item-to-item spread).
  """
  if passes < 1:
    raise ValueError(f"--passes must be at least 1, got {passes}")
  check_batch_size(batch_size)
  eval_fn = eval_fn or make_eval_fn(setup, policy, exact)
  num_items = len(items)
  num_batches = -(-num_items // batch_size)
  per_pass = np.zeros((passes, num_items))
  base_key = jax.random.PRNGKey(seed)
  start = last_log = time.time()
  for p in range(passes):
    for b in range(num_batches):
      rows = items[b * batch_size : (b + 1) * batch_size]
      key = jax.random.fold_in(jax.random.fold_in(base_key, p), b)
      values = sharding.to_host(eval_fn(params, sharding.place_rows(rows, setup.mesh), key))
      per_pass[p, b * batch_size : b * batch_size + len(rows)] = values[: len(rows)]
      if time.time() - last_log > log_every_s and jax.process_index() == 0:
        done = p * num_batches + b + 1
        rate = done / (time.time() - start)
        print(
          f"  eval pass {p + 1}/{passes} batch {b + 1}/{num_batches} "
          f"({rate:.2f} batches/s, ETA {(passes * num_batches - done) / rate:.0f}s)",
          flush=True,
        )
        last_log = time.time()
  if not np.all(np.isfinite(per_pass)):
    raise FloatingPointError("evaluation produced NaN/Inf bits/dim: the checkpoint's parameters are not finite")
  per_item = per_pass.mean(axis=0)
  stderr = float(per_item.std(ddof=1) / np.sqrt(num_items)) if num_items > 1 else float("nan")
  return {
    "bpd": float(per_item.mean()),
    "stderr": stderr,
    "num_items": int(num_items),
    "passes": int(passes),
    "per_item": per_item,
  }


def check_batch_size(batch_size) -> None:
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(
      f"the batch size must be a positive integer, got {batch_size!r}; set --batch-size or "
      "--config.train.eval_batch_size"
    )


def unit_name(spec) -> str:
  """What one bit per variable is called for this data: per char (text), per sample (audio), per dim."""
  return {"text": "bits/char", "audio": "bits/sample"}.get(spec.kind, "bits/dim")


def write_json(path, payload: dict) -> None:
  """Process 0 writes; local files are replaced atomically (a crash never leaves half a file)."""
  if jax.process_index() != 0:
    return
  path = epath.Path(path)
  text = json.dumps(payload, indent=2) + "\n"
  if "://" in str(path):
    path.write_text(text)
    return
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


# Module level with the network and the model static: every estimate_lt call of a job (and of every job in the
# process with the same setup) reuses one compiled function per batch shape instead of building a new jit.
@functools.partial(jax.jit, static_argnames=("apply_fn", "spec"))
def _lt_bits(params, batch, g_B, key, *, apply_fn, spec):
  num_steps = int(np.prod(batch.shape[1:]))
  sigma_BxD = ardm.sample_orders(key, batch.shape[0], num_steps)
  return upscale.elbo_terms_given(apply_fn, params, batch, g_B // num_steps, sigma_BxD, g_B % num_steps, spec=spec)[
    "lt_bits"
  ]


def estimate_lt(
  setup,
  params,
  items: np.ndarray,
  *,
  samples_per_step: int,
  batch_size: int,
  seed: int,
  stride: int = 1,
  log_every_s: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Held-out L_t (bits per variable) for every global step s * D + t, stratified: `samples_per_step` draws per
  step; [S * D] arrays (reshape to [S, D] for the stages of an upscale model).

  Each draw takes a random held-out item and a random order, so the per-t mean is an unbiased estimate of
  L_t and its standard error is the sample standard deviation over sqrt(samples_per_step).

  With `stride` k > 1 only the steps t = 0, k, 2k, ... and D - 1 of each stage are measured (1/k of the network
  calls) and the others are linearly interpolated between them, values and standard errors alike: L_t is smooth
  in t, and at D = 16,000 (256,000 steps for the 16-stage audio model) measuring every step is rarely worth it.
  """
  objective.require_ardm(setup.objective, "estimating L_t for parallel policies")
  if samples_per_step < 2:
    raise ValueError(f"--samples must be at least 2 per step to give standard errors, got {samples_per_step}")
  if stride < 1:
    raise ValueError(f"--stride must be at least 1 (every step), got {stride}")
  check_batch_size(batch_size)
  num_steps = setup.objective.num_net_steps(setup.spec.num_steps)
  stage_len = setup.spec.num_steps
  t_stage = np.arange(stage_len)
  t_measured = t_stage[(t_stage % stride == 0) | (t_stage == stage_len - 1)]
  stages = num_steps // stage_len
  measured = (np.arange(stages)[:, None] * stage_len + t_measured[None, :]).ravel()
  mean, stderr = _estimate_steps(
    setup, params, items, measured.astype(np.int32), samples_per_step, batch_size, seed, log_every_s
  )
  if len(measured) == num_steps:
    return mean, stderr
  interp = lambda v: np.concatenate([np.interp(t_stage, t_measured, row) for row in v.reshape(stages, -1)])
  return interp(mean), interp(stderr)


def _estimate_steps(setup, params, items, steps, samples_per_step, batch_size, seed, log_every_s):
  """Mean and standard error of the L_t draws at the global steps `steps` (see estimate_lt)."""
  num_steps = len(steps)
  rng = np.random.default_rng(seed)
  t_all = np.repeat(steps, samples_per_step)
  item_all = rng.integers(0, len(items), t_all.size)
  num_batches = -(-t_all.size // batch_size)
  fn = functools.partial(_lt_bits, apply_fn=setup.apply_fn, spec=setup.objective)
  values = np.zeros(t_all.size)
  base_key = jax.random.PRNGKey(seed)
  start = last_log = time.time()
  for b in range(num_batches):  # each batch padded to divide the devices, as in evaluate_params
    rows = slice(b * batch_size, (b + 1) * batch_size)
    batch = sharding.place_rows(items[item_all[rows]], setup.mesh)
    t_B = sharding.place_rows(t_all[rows], setup.mesh)
    values[rows] = sharding.to_host(fn(params, batch, t_B, jax.random.fold_in(base_key, b)))[: len(t_all[rows])]
    if time.time() - last_log > log_every_s and jax.process_index() == 0:
      rate = (b + 1) / (time.time() - start)
      print(
        f"  L_t estimate: batch {b + 1}/{num_batches} ({rate:.2f} batches/s, ETA {(num_batches - b - 1) / rate:.0f}s)",
        flush=True,
      )
      last_log = time.time()
  per_step = values.reshape(num_steps, samples_per_step)
  if not np.all(np.isfinite(per_step)):
    raise FloatingPointError("L_t estimate is not finite: the checkpoint's parameters are not finite")
  return per_step.mean(axis=1), per_step.std(axis=1, ddof=1) / np.sqrt(samples_per_step)


class HeldOutProgress:
  """train.eval_every: the EMA parameters on a fixed subset of held-out items (the first `eval_items` of a seeded
  permutation of 'validation', or 'test' when the data has no validation split), one pass with the same seed each
  time, so successive numbers differ only by what the model learned."""

  def __init__(self, setup, dataset, config, writer, log):
    tc = config.train
    self.every = int(tc.eval_every)  # train.eval_every and eval_items were checked (config_checks) before the run
    self.num_steps, self.batch_size, self.seed = int(tc.num_steps), int(tc.eval_batch_size), int(config.seed)
    self.setup, self.writer, self.log = setup, writer, log
    if self.every == 0:
      return
    num_items = int(tc.eval_items)
    self.split = "validation" if "validation" in dataset.splits else "test"
    items = dataset.eval_items(self.split)
    chosen = np.random.default_rng(self.seed).permutation(len(items))[: min(num_items, len(items))]
    self.items = items[np.sort(chosen)]
    self.unit = unit_name(setup.spec)
    self.eval_fn = make_eval_fn(setup)  # built once: every evaluation reuses one compilation

  def due(self, step: int) -> bool:
    return self.every > 0 and (step % self.every == 0 or step == self.num_steps)

  def __call__(self, step: int, ema_params) -> float:
    result = evaluate_params(
      self.setup, ema_params, self.items, passes=1, batch_size=self.batch_size, seed=self.seed, eval_fn=self.eval_fn
    )
    self.writer.write_scalars(step, {"eval_bpd": result["bpd"], "eval_bpd_stderr": result["stderr"]})
    self.log(
      f"eval step {step}: {result['bpd']:.4f} ± {result['stderr']:.4f} {self.unit} "
      f"(EMA params, {len(self.items)} {self.split} items)",
      flush=True,
    )
    return result["bpd"]
