"""Test-wide settings: strict rank promotion, CPU only, and a compile cache of the test session's own (commands the
tests run would otherwise fill the user's ~/.cache/ardm_jax)."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ARDM_COMPILE_CACHE", tempfile.mkdtemp(prefix="ardm_test_jax_cache_"))

import jax  # noqa: E402  (the environment above must be set before jax is imported)

jax.config.update("jax_numpy_rank_promotion", "raise")


def run(*argv):
  """Runs `ardm ARGV...` in this process (paths and numbers as strings); returns its exit code."""
  from ardm_jax import cli  # noqa: PLC0415  (after the environment above is set)

  return cli.main([str(a) for a in argv])


def expect_error(capsys, *argv, match):
  """`ardm ARGV...` must fail with exit code 2 and one line on stderr containing `match`, no traceback."""
  import pytest  # noqa: PLC0415

  with pytest.raises(SystemExit) as exc:
    run(*argv)
  assert exc.value.code == 2
  err = capsys.readouterr().err
  assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def restore_full_state(model):
  """The whole train state of a workdir model's step, optimizer included (the jobs restore only what they use)."""
  from ardm_jax import checkpoint  # noqa: PLC0415

  manager = checkpoint.make_manager(model.workdir, async_save=False)
  try:
    state, _ = checkpoint.restore(manager, model.step, model.setup.abstract_state, model.setup.state_shardings)
  finally:
    manager.close()
  return state
