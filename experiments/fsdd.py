"""Audio ARDMs on the FSDD spoken digits in ../shared/data/fsdd (8 kHz, 16-bit; no download): a CPU-sized
stand-in for SC09 with the same code paths.

Variants:
  default         OA-ARDM, discretised logistic mixture over 65,536 classes, small DiffWave, 1 s at 8 kHz.
  upscale         Upscale ARDM, branch factor 16 (4 stages of 4 bits), direct parametrisation.
  tiny / upscale_tiny   seconds-long smoke runs on 64-sample clips (tests).
Command:
  ardm train --config experiments/fsdd.py --workdir runs/fsdd
Expected: no paper number (FSDD is not in the paper); train/eval/sample/compress as for SC09, in bits/sample.
Time and result of the default and upscale variants: not measured; `:tiny` (a plumbing check, 2 steps) is
recorded in benchmarks/RESULTS.md "Audio: a tiny FSDD run end to end".
"""

from ardm_jax.configs import base_config, shrink_to_tiny

DEFAULT_PATH = "../shared/data/fsdd/fsdd_8khz.npz"


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "fsdd"
  config.data.path = DEFAULT_PATH
  config.data.sample_rate = 8000
  config.data.length = 8000
  config.data.bits = 16
  config.model.name = "diffwave"
  config.model.num_blocks = 12
  config.model.features = 64
  config.model.dilation_cycle = 6
  config.ardm.output = "logistic_mixture"
  config.ardm.num_mixtures = 10
  config.ardm.ce_weight = 1e-4
  config.optim.learning_rate = 5e-4
  config.optim.warmup_steps = 200
  config.optim.clip_norm = 100.0
  config.optim.ema_decay = 0.999
  config.train.batch_size = 8
  config.train.num_steps = 2000
  config.train.checkpoint_every = 500
  config.train.eval_batch_size = 20
  if variant.startswith("upscale"):
    config.ardm.upscale = "zero_least_significant"
    config.ardm.branch_factor = 16
    config.ardm.parametrisation = "direct"
    config.ardm.output = "categorical"
  if variant.endswith("tiny"):
    shrink_to_tiny(config, batch_size=4, num_steps=2, eval_passes=1)
    config.train.eval_batch_size = 50
  elif variant not in ("default", "upscale"):
    raise ValueError(f"unknown variant {variant!r} for fsdd; use 'default', 'upscale', 'tiny' or 'upscale_tiny'")
  return config
