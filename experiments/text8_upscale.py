"""Upscale ARDM on text8: two stages, first each character's class (space / vowel / consonant), then the
character within its class; the paper's Transformer and optimisation as in experiments/text8.py.

Command (download http://mattmahoney.net/dc/text8.zip first; TPU/GPU):
  ardm train --config experiments/text8_upscale.py --workdir gs://BUCKET/ardm/text8_upscale \
      --config.data.path=/data/text8.zip
Expected (paper; not measured with this code): no number. The paper reports that in preliminary experiments upscale
variants for language did not beat the order-agnostic model (section 6), so about the OA-ARDM's 1.43 bits/char
at best, with 2 x 250 steps. Time: not measured with this code. `experiments/text8_upscale.py:tiny` is a smoke
variant. Sources of every other value: experiments/text8.py.
"""

import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "text8.py"))
  # official configs/default.py: model='bit_ao' with upscale_mode='augment_text8' (the paper gives no transitions
  # for text); upscale_branch_factor=30 is unused in that mode
  config.ardm.upscale = "text8"
  config.ardm.parametrisation = "data"  # official upscale_direct_parametrization=False
  # The inputs stay text8.py's official ones (no mask, no t), as in the official bit_ao text8 model: the ids alone
  # tell the stage (absorbing ids occur only in stage 1) and the positions to predict (absorbing ids in stage 1,
  # vowel / consonant ids in stage 2; a space is exact after stage 1). So model.stage_input stays off: the official
  # TransformerLM.__call__ deletes the whole additional input, the stage one-hot of bit_ao.prepare_additional_input
  # with the mask.
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for text8_upscale; use 'default' or 'tiny'")
  return config
