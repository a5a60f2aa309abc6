"""OA-ARDM on text8 with the paper's Transformer (12 layers, width 768, MLP 3072, 12 heads), crops of 250.

Command (download http://mattmahoney.net/dc/text8.zip first; TPU/GPU):
  ardm train --config experiments/text8.py --workdir gs://BUCKET/ardm/text8 --config.data.path=/data/text8.zip
Expected (paper, Table 1): 1.43 ± 0.001 bits/char with 250 steps, 1.51 ± 0.007 with a 20-step DP policy
(paper App. D: batch 512, Adam lr 5e-4 with 5,000 warmup steps, clipping 0.25, EMA 0.995, 3M steps). `experiments/text8.py:tiny` is a smoke variant.
"""
from ardm_jax.configs import base_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = base_config()
  config.data.name = "text8"
  config.data.path = None
  config.data.seq_len = 250
  config.model.name = "transformer"
  config.model.num_layers = 12
  config.model.emb_dim = 768
  config.model.mlp_dim = 3072
  config.model.num_heads = 12
  config.model.dropout = 0.0
  config.model.dtype = "bfloat16"
  config.ardm.ce_weight = 1e-4
  config.optim.learning_rate = 5e-4
  config.optim.warmup_steps = 5000
  config.optim.clip_norm = 0.25
  config.optim.weight_decay = 0.001
  config.optim.ema_decay = 0.995  # paper, App. D
  config.train.batch_size = 512
  config.train.num_steps = 3_000_000
  config.train.checkpoint_every = 10_000
  config.train.eval_batch_size = 200
  if variant == "tiny":
    shrink_to_tiny(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for text8; use 'default' or 'tiny'")
  return config
