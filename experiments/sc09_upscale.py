"""Upscale ARDM on SC09: 16 stages, one bit each (branch factor 2, most significant first), direct
parametrisation (the network predicts each stage's next bit), the paper's DiffWave as in experiments/sc09.py.

Command (GPU/TPU; SC09 prepared as for experiments/sc09.py):
  ardm train --config experiments/sc09_upscale.py --workdir gs://BUCKET/ardm/sc09_upscale
Expected (paper, the target; not measured with this code): 6.29 bits/dim with 16 x 16,000 steps (ARDM Upscale 2,
section 5 Table 4; Upscale 4, `--config.ardm.branch_factor=4`, also 6.29 with 8 x 16,000 steps, and 6.32 with
8 x 50 steps, App. B.2 Table 7). Time: not measured with this code; the paper reports about 4 days of training
(App. D). `:tiny` is a smoke variant. Sources of every other value: experiments/sc09.py.
"""

import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "sc09.py"))
  # official configs/sc09_upscale.py: model='bit_ao', upscale_mode='zero_least_significant', branch factor 2
  config.ardm.upscale = "zero_least_significant"
  config.ardm.branch_factor = 2
  # paper section 5: audio Upscale ARDMs use the direct parametrization (65,536-way outputs would not fit), with
  # a categorical softmax per stage (App. D); official upscale_direct_parametrization=True, 'categorical'
  config.ardm.parametrisation = "direct"
  config.ardm.output = "categorical"
  # The official input: bit_ao.prepare_additional_input appends a one-hot of the stage (S channels) to the known-mask,
  # and InputProcessingAudio concatenates both to the values before conv_in (S = 16 here: 1 + 16 mask channels).
  config.model.stage_input = True
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for sc09_upscale; use 'default' or 'tiny'")
  return config
