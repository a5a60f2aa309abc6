"""OA-ARDM on the 4,000 + 500 real CIFAR-10 images of ../shared/data (an .npz; no tfds needed).

Command (CPU-sized model: U-Net ch 32, 2+2 ResBlocks, no attention, 455k parameters):
  ardm train --config experiments/cifar10_subset.py --workdir runs/cifar10_subset
Expected (measured, benchmarks/RESULTS.md "Lossless compression on the 500 CIFAR-10 subset test images", commit
e5caf60, 2 CPU cores): test 6.2566 ± 0.0253 bits/dim (EMA, 1 pass) after the 1,400 steps (5.6 epochs), 33 minutes
with the test evaluation at 0.7-0.8 steps/s; far above the paper's 2.69 (4,000 images and half an hour of CPU,
not 3,000 TPU epochs). `:tiny` is a smoke variant.
"""

from ardm_jax.configs import base_config, shrink_to_tiny

DEFAULT_PATH = "../shared/data/cifar10_subset/cifar10_subset.npz"


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "npz"
  config.data.path = DEFAULT_PATH
  config.data.num_classes = 256
  config.data.augment = "none"  # 'flip_rot90' is the paper configs' augmentation; off for the measured run above
  config.model.name = "unet"
  config.model.ch = 32
  config.model.num_res_blocks = 2
  config.model.input_embed_dim = 16
  config.model.num_heads = 1
  config.model.attention = False  # attention over 1,024 positions would double the step time on CPU
  config.model.dropout = 0.0
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 200
  config.optim.clip_norm = 1.0
  config.optim.ema_decay = 0.999
  config.train.batch_size = 16
  config.train.num_steps = 1400
  config.train.checkpoint_every = 350
  config.train.eval_passes = 1
  config.train.eval_batch_size = 100
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for cifar10_subset; use 'default' or 'tiny'")
  return config
