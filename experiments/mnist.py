"""OA-ARDM on MNIST (tfds, 28x28, 256 levels) with a mid-sized single-resolution U-Net.

Command (prepare the data first with `tfds build mnist` on a machine with internet):
  ardm train --config experiments/mnist.py --workdir runs/mnist
Expected: not reported in the paper; a sanity benchmark for image models. Time and result: not measured.
`:tiny` is a smoke variant.
"""

from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "mnist"
  config.data.tfds_data_dir = None
  config.data.download = False
  config.data.augment = "none"  # flips and quarter turns change what a digit is (6 and 9); override at your risk
  config.model.name = "unet"
  config.model.ch = 128
  config.model.num_res_blocks = 8
  config.model.input_embed_dim = 16
  config.model.num_heads = 1
  config.model.attention = True
  config.model.dropout = 0.0
  config.optim.learning_rate = 2e-4
  config.train.batch_size = 128
  config.train.num_steps = 200_000
  config.train.eval_batch_size = 200
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for mnist; use 'default' or 'tiny'")
  return config
