"""D3PM-absorbing baseline on scikit-learn's digits: the digits default's U-Net, optimiser and steps, trained as
discrete-time absorbing diffusion with T = 1000 steps (Austin et al., 2021) instead of as an OA-ARDM.

Command:
  ardm train --config experiments/digits_d3pm.py --workdir runs/digits_d3pm
  ardm eval --workdir runs/digits_d3pm --budget 20 --passes 4     # the same denoiser as a 20-step model
Expected: test bits/dim a little above the OA-ARDM's at T = 1000 and higher at few steps. This config as it
stands: time and result not measured; benchmarks/RESULTS.md "Reproduction" measured a variant with U-Net ch 32
on 2 CPU cores at e761e64 (D3PM − OA-ARDM from +0.001 to +0.012 bits/dim over the budgets there).
`:tiny` is a seconds-long smoke variant.
"""

import os

from ardm_jax.configs import experiment_config, shrink_to_tiny


def get_config(variant: str = "default"):
  config = experiment_config(os.path.join(os.path.dirname(__file__), "digits.py"))
  config.ardm.objective = "d3pm_absorbing"
  config.ardm.diffusion_steps = 1000
  if variant == "tiny":
    shrink_to_tiny(config, batch_size=8, num_steps=4, eval_passes=1)
    config.train.eval_batch_size = 100
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} for digits_d3pm; use 'default' or 'tiny'")
  return config
