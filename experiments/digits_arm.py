"""Single-order ARM baseline on scikit-learn's digits: a causal Transformer over the 64 pixels in raster order,
with the digits default's optimiser, batch and number of steps. Its NLL is exact (one call gives all 64
conditionals); it generates in 64 calls.

Command:
  ardm train --config experiments/digits_arm.py --workdir runs/digits_arm
Expected: test bits/dim a little below the OA-ARDM's (the paper: a fixed order is a little better than
order-agnostic). This config as it stands: time and result not measured. Measured on a narrower variant (3 layers,
width 96; benchmarks/RESULTS.md "Reproduction" at e761e64, 2 CPU cores): 1.825 ± 0.014 against the OA-ARDM's
1.896 ± 0.017.
`:tiny` is a seconds-long smoke variant.
"""

import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "digits.py"))
  config.ardm.objective = "arm"
  config.ardm.ce_weight = 0.0  # the ARM's loss is already the plain cross-entropy
  config.model = config.model.__class__(
    dict(name="transformer", num_layers=4, emb_dim=128, mlp_dim=512, num_heads=4, dropout=0.1, causal=True, rope=True)
  )
  if variant == "tiny":
    shrink_to_tiny(config, batch_size=8, num_steps=4, eval_passes=1)
    config.train.eval_batch_size = 100
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for digits_arm; use 'default' or 'tiny'")
  return config
