"""OA-ARDM on scikit-learn's digits (8x8, 17 levels): the embedded default, no download.

Command:
  ardm train --config experiments/digits.py --workdir runs/digits
Expected (measured at 754cf80, benchmarks/RESULTS.md "Digits default"): test bits/dim 1.8472 ± 0.0183 (EMA
parameters, 4 passes over the 300 test images) in 5 min 11 s on 2 quiet CPU cores (training and its test
evaluation); xz -9e on the 300 test images as one file gives 2.88 (2.71 on all 1,797 images), WebP 7.97 per image.
`experiments/digits.py:tiny` is a seconds-long smoke variant for tests.
"""

from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "digits"
  config.model.name = "unet"
  config.model.ch = 64
  config.model.num_res_blocks = 4
  config.model.input_embed_dim = 16
  config.model.num_heads = 1
  config.model.attention = True
  config.model.dropout = 0.1
  config.ardm.ce_weight = 1e-3
  config.optim.learning_rate = 2e-3
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 100
  config.optim.clip_norm = 1.0
  config.optim.ema_decay = 0.999
  config.train.batch_size = 64
  config.train.num_steps = 600
  config.train.log_every = 100
  config.train.checkpoint_every = 200
  config.train.eval_passes = 4
  config.train.eval_batch_size = 300
  if variant == "tiny":
    shrink_to_tiny(config, batch_size=8, num_steps=4, eval_passes=1)
    config.train.eval_batch_size = 100
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for digits; use 'default' or 'tiny'")
  return config
