"""Test-wide settings: strict rank promotion, and CPU only."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (the environment above must be set before jax is imported)

jax.config.update("jax_numpy_rank_promotion", "raise")
