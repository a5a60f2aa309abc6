"""Upscale ARDM on SC09: 16 stages, one bit each (branch factor 2, most significant first), direct
parametrisation (the network predicts each stage's next bit), the paper's DiffWave as in experiments/sc09.py.

Command (GPU/TPU; SC09 prepared as for experiments/sc09.py):
  ardm train --config experiments/sc09_upscale.py --workdir gs://BUCKET/ardm/sc09_upscale
Expected (paper, Table 4): 6.29 bits/dim with 16 x 16,000 steps. `:tiny` is a smoke variant.
"""
import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "sc09.py"))
  config.ardm.upscale = "zero_least_significant"
  config.ardm.branch_factor = 2
  config.ardm.parametrisation = "direct"
  config.ardm.output = "categorical"
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for sc09_upscale; use 'default' or 'tiny'")
  return config
