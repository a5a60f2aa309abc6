"""Upscale ARDM on CIFAR-10 (tfds): 4 stages of base-4 digits of each 8-bit sub-pixel, the paper's U-Net.

Same network and optimisation as experiments/cifar10.py (one resolution, 32 ResBlocks of 256 channels); the
network sees every coarse value as an input id and S * D = 4 * 3072 steps. Data parametrisation: the network
predicts all 256 values and each stage renormalises over the values consistent with the coarser image.
Command (TPU v4-32 or 8 GPUs; `tfds build cifar10` first on a machine with internet):
  ardm train --config experiments/cifar10_upscale4.py --workdir gs://BUCKET/ardm/cifar10_upscale4
Expected (paper, Table 6): 2.64 bits/dim with 4 x 3072 steps (ARDM-Upscale 4), against 2.69 for the OA-ARDM.
`experiments/cifar10_upscale4.py:tiny` is a smoke variant.
"""
import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "cifar10.py"))
  config.ardm.upscale = "zero_least_significant"
  config.ardm.branch_factor = 4
  config.ardm.parametrisation = "data"
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for cifar10_upscale4; use 'default' or 'tiny'")
  return config
