"""OA-ARDM on CIFAR-10 (tfds) with the paper's U-Net: one resolution, 32 ResBlocks of 256 channels, attention.

Command (TPU v4-32 or 8 GPUs; prepare the data first with `tfds build cifar10` on a machine with internet):
  ardm train --config experiments/cifar10.py --workdir gs://BUCKET/ardm/cifar10
Expected (paper, Table 6): 2.69 bits/dim with 3072 steps (2.74 with a 50-step policy), after 3,000 epochs
(paper App. D: Adam lr 1e-4, batch 128, EMA 0.9999, clipping 100, CE weight 1e-3; ~2 weeks on 8 TPUv4). `experiments/cifar10.py:tiny` is a smoke variant.
"""
from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "cifar10"
  config.data.tfds_data_dir = None
  config.data.download = False
  config.model.name = "unet"
  config.model.ch = 256
  config.model.num_res_blocks = 32
  config.model.input_embed_dim = 32
  config.model.num_heads = 1
  config.model.attention = True
  config.model.dropout = 0.0
  config.model.dtype = "bfloat16"
  config.model.remat = True
  config.ardm.ce_weight = 1e-3
  config.optim.learning_rate = 1e-4
  config.optim.b2 = 0.999
  config.optim.clip_norm = 100.0
  config.optim.ema_decay = 0.9999
  config.train.batch_size = 128
  config.train.num_steps = 1_200_000  # 3,000 epochs of 50,000 images at batch 128
  config.train.log_every = 100
  config.train.checkpoint_every = 5000
  config.train.eval_passes = 1
  config.train.eval_batch_size = 200
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for cifar10; use 'default' or 'tiny'")
  return config
