"""Upscale ARDM on text8: two stages, first each character's class (space / vowel / consonant), then the
character within its class; the paper's Transformer and optimisation as in experiments/text8.py.

Command (download http://mattmahoney.net/dc/text8.zip first; TPU/GPU):
  ardm train --config experiments/text8_upscale.py --workdir gs://BUCKET/ardm/text8_upscale \
      --config.data.path=/data/text8.zip
Expected: about the OA-ARDM's 1.43 bits/char, not better: the paper gives no number but reports that upscale
variants for language did not beat the order-agnostic model (section 6); 2 x 250 steps.
`experiments/text8_upscale.py:tiny` is a smoke variant.
"""
import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "text8.py"))
  config.ardm.upscale = "text8"
  config.ardm.parametrisation = "data"
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for text8_upscale; use 'default' or 'tiny'")
  return config
