"""Which model a config trains: the `upscale_spec.Upscale` spec every job (train, eval, policy, sample, compress)
runs, or one of the paper's baselines (`baselines.ARM`, `baselines.D3PMAbsorbing`), which train and evaluate in the same
trainer but have no parallel policies, completion or coding.

The plain OA-ARDM is the one-stage case (`transitions.single_stage`: the absorbing class K, t_net = t), so the jobs
have one code path; `ardm.py` stays the short reference implementation of that case and a test checks that both
give the same numbers for the same key. `config.ardm` keys read here (missing keys take the defaults, so
workdirs written before a key existed still load):

  objective        'ardm' (the paper's model) | 'arm' (single-order ARM baseline; needs a causal network) |
                   'd3pm_absorbing' (D3PM-absorbing baseline with `diffusion_steps` T)
  diffusion_steps  T of the D3PM baseline (Austin et al. use 1000)
  upscale          'none' (OA-ARDM) | 'zero_least_significant' | 'augment_least_significant' | 'text8'
  branch_factor    b of the digit transitions (2, 4, 16, ...); ceil(log_b K) stages
  parametrisation  'data' (predict the data distribution, renormalised under the coarse value) | 'direct'
                   (predict the next base-b digit); an OA-ARDM is 'data'
  output           'categorical' | 'logistic_mixture' (the data distribution of 'data'; audio uses the mixture)
  num_mixtures     components of the logistic mixture
"""

from __future__ import annotations

from typing import Any

from ardm_jax import baselines, transitions, upscale, upscale_spec
from ardm_jax.distributions import build_distribution

DEFAULTS = dict(
  upscale="none",
  branch_factor=2,
  parametrisation="data",
  output="categorical",
  num_mixtures=30,
  objective="ardm",
  diffusion_steps=1000,
)
OBJECTIVES = ("ardm", "arm", "d3pm_absorbing")


def _get(ardm_cfg: Any, key: str):
  """`config.ardm[key]`, or its default when the key (or the whole section) is missing."""
  return ardm_cfg.get(key, DEFAULTS[key]) if ardm_cfg is not None else DEFAULTS[key]


def build(ardm_cfg: Any, num_classes: int, model_cfg: Any = None):
  """The model a config trains.

  Args:
    ardm_cfg: `config.ardm` (a ConfigDict or dict; None or missing keys take `DEFAULTS`).
    num_classes: K, the data set's number of values per variable.
    model_cfg: `config.model`, checked for what a baseline needs of its network (causal or not).

  Returns:
    An `upscale_spec.Upscale` for 'ardm' (the plain OA-ARDM is `single_stage` with 'data'), or a
    `baselines.ARM` / `baselines.D3PMAbsorbing`.

  Raises:
    ValueError: for an unknown objective, mode or parametrisation, or a combination of keys that does not fit
      (each message names the key to change).
  """
  which = _get(ardm_cfg, "objective")
  if which not in OBJECTIVES:
    raise ValueError(f"unknown ardm.objective {which!r}; use one of {OBJECTIVES}")
  if which != "ardm":
    return _baseline(which, ardm_cfg, num_classes, model_cfg)
  mode = _get(ardm_cfg, "upscale")
  param = _get(ardm_cfg, "parametrisation")
  output = _get(ardm_cfg, "output")
  if mode == "none":
    if param != "data":
      raise ValueError(
        f"ardm.parametrisation={param!r} needs upscale stages; an OA-ARDM (ardm.upscale='none') "
        "predicts the data itself: use parametrisation='data'"
      )
    stages = transitions.single_stage(num_classes)
  else:
    stages = transitions.make_transitions(mode, num_classes, int(_get(ardm_cfg, "branch_factor")))
  if param == "direct":
    if output != "categorical":
      raise ValueError(
        f"ardm.output={output!r} applies to the 'data' parametrisation; 'direct' predicts digit "
        "logits itself: set ardm.output='categorical' or ardm.parametrisation='data'"
      )
    return upscale_spec.Upscale(stages, "direct")
  options = {"num_mixtures": int(_get(ardm_cfg, "num_mixtures"))} if output == "logistic_mixture" else {}
  return upscale_spec.Upscale(stages, param, build_distribution(output, num_classes, **options))


def _baseline(which: str, ardm_cfg: Any, num_classes: int, model_cfg: Any):
  """The baseline `which` after checking the keys it ignores and the network it needs."""
  if _get(ardm_cfg, "upscale") != "none" or _get(ardm_cfg, "output") != "categorical":
    raise ValueError(
      f"ardm.objective={which!r} is a baseline with a categorical output and no upscale stages; "
      "set ardm.upscale='none' and ardm.output='categorical'"
    )
  causal = bool(model_cfg is not None and model_cfg.get("causal", False))
  if which == "arm":
    if not causal:
      raise ValueError(
        "ardm.objective='arm' needs a causal network: set model.name='transformer' and model.causal=True"
      )
    return baselines.ARM(num_classes)
  if causal:
    raise ValueError(f"ardm.objective={which!r} needs a bidirectional network; set model.causal=False")
  return baselines.D3PMAbsorbing(num_classes, int(_get(ardm_cfg, "diffusion_steps")))


def is_baseline(model: Any) -> bool:
  """Tells a baseline from an (upscale) ARDM.

  Args:
    model: the model from `build`.

  Returns:
    True if `model` is one of the baselines rather than an (upscale) ARDM.
  """
  return not isinstance(model, upscale_spec.Upscale)


def require_ardm(model: Any, job: str) -> None:
  """Refuses, in one line, a job that needs an ARDM (parallel policies, L_t, completion, coding).

  Args:
    model: the model from `build`.
    job: the job's name for the message.

  Raises:
    ValueError: if `model` is a baseline.
  """
  if is_baseline(model):
    raise ValueError(
      f"{job} needs an ARDM, but this workdir trained the {model.name!r} baseline "
      "(ardm.objective); baselines support train, eval and sample"
    )


def loss_terms(model: Any, apply_fn, params, x, key, *, t_sampling: str = "uniform", train: bool = False) -> dict:
  """Per-example terms of the training objective, dispatched on the model.

  Args:
    model: the model from `build`.
    apply_fn: the network, `apply_fn(params, x_in, known, t, train, key)`.
    params: its parameters.
    x: int [B, ...] data values.
    key: PRNG key for the model's own randomness (orders, steps, dropout).
    t_sampling: 'uniform' or 'stratified' step sampling.
    train: passed to the network.

  Returns:
    A dict of [B] arrays in nats: nll (the ELBO bound, or the exact NLL for the ARM), ce, and lt_bits / t
    (and for some baselines lt_weight) for the per-step tracker.
  """
  if isinstance(model, baselines.ARM):
    return baselines.arm_terms(apply_fn, params, x, key, model=model, train=train)
  if isinstance(model, baselines.D3PMAbsorbing):
    return baselines.d3pm_terms(apply_fn, params, x, key, model=model, t_sampling=t_sampling, train=train)
  return upscale.elbo_terms(apply_fn, params, x, key, spec=model, t_sampling=t_sampling, train=train)


def with_generation_budget(model: Any, budget: int | None, num_steps: int):
  """A baseline with `budget` generation calls.

  Args:
    model: a baseline from `build`.
    budget: network calls for generation, or None to keep the model as trained.
    num_steps: D.

  Returns:
    D3PM-absorbing with T' = budget steps, or the ARM itself (it only has D calls).

  Raises:
    ValueError: for an ARM with budget != D, or an ARDM (its budgets are policies).
  """
  if budget is None:
    return model
  if isinstance(model, baselines.D3PMAbsorbing):
    return model.with_steps(budget)
  if isinstance(model, baselines.ARM):
    if budget != num_steps:
      raise ValueError(
        f"the single-order ARM generates one variable per call: --budget must be D = {num_steps} (or left out)"
      )
    return model
  raise ValueError("with_generation_budget is for baselines; ARDM budgets are policies (sample.choose_policy)")


def describe(spec) -> str:
  """One line for logs: what the network predicts and how many stages.

  Args:
    spec: the model from `build`.

  Returns:
    A human-readable summary.
  """
  if isinstance(spec, baselines.ARM):
    return f"single-order ARM baseline (raster order, causal network); network: {spec.num_outputs} outputs"
  if isinstance(spec, baselines.D3PMAbsorbing):
    return (
      f"D3PM-absorbing baseline, T = {spec.num_diffusion_steps} steps; network: {spec.num_input_classes} "
      f"input ids, {spec.num_outputs} outputs per variable"
    )
  if spec.transitions.name == "single_stage":
    what = f"OA-ARDM, {type(spec.distribution).__name__} output"
  else:
    what = f"upscale ARDM ({spec.transitions.name}, {spec.num_stages} stages, {spec.parametrisation} parametrisation)"
  return f"{what}; network: {spec.num_input_classes} input ids, {spec.num_outputs} outputs per variable"
