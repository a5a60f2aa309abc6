"""Test-wide settings: strict rank promotion, CPU only, and a compile cache of the test session's own (commands the
tests run would otherwise fill the user's ~/.cache/ardm_jax)."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ARDM_COMPILE_CACHE", tempfile.mkdtemp(prefix="ardm_test_jax_cache_"))

import jax  # noqa: E402  (the environment above must be set before jax is imported)

jax.config.update("jax_numpy_rank_promotion", "raise")
