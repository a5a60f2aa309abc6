"""Which ARDM a config trains: the `upscale.Upscale` spec every job (train, eval, policy, sample, compress) runs.

The plain OA-ARDM is the one-stage case (`upscale.single_stage`: the absorbing class K, t_net = t), so the jobs
have one code path; `ardm.py` stays the short reference implementation of that case and a test checks that both
give the same numbers for the same key. `config.ardm` keys read here (missing keys take the defaults, so
workdirs written before a key existed still load):

  upscale          'none' (OA-ARDM) | 'zero_least_significant' | 'augment_least_significant' | 'text8'
  branch_factor    b of the digit transitions (2, 4, 16, ...); 2 + ceil(log_b K) levels
  parametrisation  'data' (predict the data distribution, renormalised under the coarse value) | 'direct'
                   (predict the next base-b digit); an OA-ARDM is 'data'
  output           'categorical' | 'logistic_mixture' (the data distribution of 'data'; audio uses the mixture)
  num_mixtures     components of the logistic mixture
"""
from __future__ import annotations

from typing import Any

from ardm_jax import upscale
from ardm_jax.distributions import build_distribution

DEFAULTS = dict(upscale="none", branch_factor=2, parametrisation="data", output="categorical", num_mixtures=30)


def _get(ardm_cfg: Any, key: str):
  return ardm_cfg.get(key, DEFAULTS[key]) if ardm_cfg is not None else DEFAULTS[key]


def build(ardm_cfg: Any, num_classes: int) -> upscale.Upscale:
  """The model spec of `config.ardm` for data with K = num_classes classes."""
  mode = _get(ardm_cfg, "upscale")
  param = _get(ardm_cfg, "parametrisation")
  output = _get(ardm_cfg, "output")
  if mode == "none":
    if param != "data":
      raise ValueError(f"ardm.parametrisation={param!r} needs upscale stages; an OA-ARDM (ardm.upscale='none') "
                       "predicts the data itself: use parametrisation='data'")
    transitions = upscale.single_stage(num_classes)
  else:
    transitions = upscale.make_transitions(mode, num_classes, int(_get(ardm_cfg, "branch_factor")))
  if param == "direct":
    if output != "categorical":
      raise ValueError(f"ardm.output={output!r} applies to the 'data' parametrisation; 'direct' predicts digit "
                       "logits itself: set ardm.output='categorical' or ardm.parametrisation='data'")
    return upscale.Upscale(transitions, "direct")
  options = {"num_mixtures": int(_get(ardm_cfg, "num_mixtures"))} if output == "logistic_mixture" else {}
  return upscale.Upscale(transitions, param, build_distribution(output, num_classes, **options))


def describe(spec: upscale.Upscale) -> str:
  """One line for logs: what the network predicts and how many stages."""
  if spec.transitions.name == "single_stage":
    what = f"OA-ARDM, {type(spec.distribution).__name__} output"
  else:
    what = f"upscale ARDM ({spec.transitions.name}, {spec.num_stages} stages, {spec.parametrisation} parametrisation)"
  return f"{what}; network: {spec.num_input_classes} input ids, {spec.num_outputs} outputs per variable"
