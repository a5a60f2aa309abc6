"""Single-order ARM baseline on a local text file or, with `:pydoc`, the embedded prose: experiments/local_text.py's
Transformer made causal (left to right), same optimiser and steps. Its NLL is exact.

Commands:
  ardm train --config experiments/local_text_arm.py:pydoc --workdir runs/pydoc_arm
Expected: bits/char a little below the OA-ARDM's (the paper: a fixed order is easier). This config as it stands:
time and result not measured; on local_text.py's narrower variant (benchmarks/RESULTS.md "Reproduction" at
e761e64, 2 CPU cores) 1.779 ± 0.029 bits/char against the OA-ARDM's 2.659 ± 0.026. `:tiny` is a smoke variant.
"""

import os

from ardm_jax.configs import experiment_config


def get_config(variant: str = "default"):
  if variant not in ("default", "pydoc", "tiny"):
    raise ValueError(f"unknown variant {variant!r} for local_text_arm; use 'default', 'pydoc' or 'tiny'")
  config = experiment_config(os.path.join(os.path.dirname(__file__), "local_text.py"), variant)
  config.ardm.objective = "arm"
  config.ardm.ce_weight = 0.0  # the ARM's loss is already the plain cross-entropy
  config.model.causal = True
  return config
