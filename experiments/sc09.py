"""OA-ARDM on SC09 (16 kHz, 1 s, 16-bit: 65,536 classes) with a discretised logistic mixture output and the
paper's DiffWave (36 residual blocks of 256 channels, dilations cycling over 12).

Command (GPU/TPU; put speech_commands_v0.02.tar.gz in tfds's manual folder first, see ardm_jax/data/audio.py):
  ardm train --config experiments/sc09.py --workdir gs://BUCKET/ardm/sc09
Expected: the paper's SC09 table (Table 4) reports the OA-ARDM far above the Upscale ARDM's 6.29 bits/dim
(see experiments/sc09_upscale.py); optimisation as the official configuration (Adam lr 1e-4, 15,000 warmup
steps, batch 256, EMA 0.995, clipping 1000, CE weight 1e-4, 1M steps). `:tiny` is a smoke variant.
"""
from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "sc09"
  config.data.tfds_data_dir = None
  config.data.download = False
  config.model.name = "diffwave"
  config.model.num_blocks = 36
  config.model.features = 256
  config.model.dilation_cycle = 12
  config.model.dtype = "bfloat16"
  config.model.remat = True
  config.ardm.output = "logistic_mixture"
  config.ardm.num_mixtures = 30
  config.ardm.ce_weight = 1e-4
  config.optim.learning_rate = 1e-4
  config.optim.warmup_steps = 15_000
  config.optim.clip_norm = 1000.0
  config.optim.ema_decay = 0.995
  config.train.batch_size = 256
  config.train.num_steps = 1_000_000
  config.train.checkpoint_every = 5000
  config.train.eval_batch_size = 64
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for sc09; use 'default' or 'tiny'")
  return config
