"""D3PM-absorbing baseline on a local text file or, with `:pydoc`, the embedded prose: experiments/local_text.py's
Transformer, optimiser and steps, trained as discrete-time absorbing diffusion with T = 1000 steps.

Commands:
  ardm train --config experiments/local_text_d3pm.py:pydoc --workdir runs/pydoc_d3pm
  ardm eval --workdir runs/pydoc_d3pm --budget 20     # the same denoiser as a 20-step model
Expected: bits/char above the OA-ARDM's at equal generation steps (paper, text8). This config as it stands: time
and result not measured; on local_text.py's narrower variant (benchmarks/RESULTS.md "Reproduction" at e761e64, 2 CPU
cores) D3PM − OA-ARDM ranged from +0.018 to +0.027 bits/char over the budgets there. `:tiny` is a smoke variant.
"""

import os

from ardm_jax.configs import experiment_config


def get_config(variant: str = "default"):
  if variant not in ("default", "pydoc", "tiny"):
    raise ValueError(f"unknown variant {variant!r} for local_text_d3pm; use 'default', 'pydoc' or 'tiny'")
  config = experiment_config(os.path.join(os.path.dirname(__file__), "local_text.py"), variant)
  config.ardm.objective = "d3pm_absorbing"
  config.ardm.diffusion_steps = 1000
  return config
