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


def newest_result(workdir, stem="eval"):
  """The parsed newest default result STEM_stepN[-k].json a job wrote in `workdir` (names: file_io.unused_path)."""
  import glob  # noqa: PLC0415
  import json  # noqa: PLC0415

  paths = glob.glob(os.path.join(str(workdir), f"{stem}_step[0-9]*.json"))
  assert paths, f"no {stem}_step*.json in {workdir}"
  with open(max(paths, key=os.path.getmtime)) as f:
    return json.load(f)


def load_benchmark(name):
  """The module benchmarks/NAME.py (benchmarks are scripts, not a package)."""
  import importlib.util  # noqa: PLC0415

  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def restore_full_state(model):
  """The whole train state of a workdir model's step, optimizer included (the jobs restore only what they use)."""
  from ardm_jax import checkpoint  # noqa: PLC0415

  manager = checkpoint.make_manager(model.workdir, async_save=False)
  try:
    state, _ = checkpoint.restore(manager, model.step, model.setup.abstract_state, model.setup.state_shardings)
  finally:
    manager.close()
  return state


# ------------------------------------------------------------------------------------------------------------
# The coder's toy networks and items (tests/test_coding_walk.py, test_container.py, test_entropy_models.py)

import types  # noqa: E402

import numpy as np  # noqa: E402

from ardm_jax.coding import entropy_models, walk  # noqa: E402


def toy_predict(D, K, seed=0, scale=3.0, H=12):
  """Deterministic float32 logits that depend on every input value (absorbing K included), the mask and t."""
  r = np.random.default_rng(seed)
  E = r.normal(size=(K + 1, H))
  A = r.normal(size=(D, D)) / np.sqrt(D)
  M = r.normal(size=(D, H))
  P = r.normal(size=(D, H))
  T = 0.3 * r.normal(size=(D, H))
  W = scale * r.normal(size=(H, K)) / np.sqrt(H)

  def predict(x_BxD, known_BxD, t):
    assert x_BxD.dtype == np.int32 and known_BxD.dtype == bool and isinstance(t, int)
    f = np.einsum("ij,bjh->bih", A, E[x_BxD]) + known_BxD[..., None] * M[None] + P[None] + T[t][None, None]
    return (np.tanh(f) @ W).astype(np.float32)

  return predict


def items(kind, B, D, K, rng):
  if kind == "zeros":
    return np.zeros((B, D), np.int32)
  if kind == "max":
    return np.full((B, D), K - 1, np.int32)
  if kind == "uniform":
    return rng.integers(0, K, size=(B, D)).astype(np.int32)
  walk = np.cumsum(rng.integers(-1, 2, size=(B, D)), axis=1) + K // 2  # smooth, like image rows
  return np.clip(walk, 0, K - 1).astype(np.int32)


def digit_stages(K, b, augment=False):
  """Base-b digit transitions in NumPy (as ardm_jax.upscale builds them): stage s codes digit S-1-s."""
  S, cap = 0, 1
  while cap < K:
    cap, S = cap * b, S + 1
  k = np.arange(K)
  levels = np.stack([(k // b ** (S - l)) * b ** (S - l) for l in range(S + 1)])
  if augment:  # every level its own ids: data first, the absorbing state last
    offset = 0
    for l in range(S, -1, -1):
      prefix = k // b ** (S - l)
      levels[l] = offset + prefix
      offset += prefix.max() + 1
  slots = np.stack([(k // b ** (S - 1 - s)) % b for s in range(S)])
  return types.SimpleNamespace(levels=levels, slots=slots)


def toy_stage_predict(stages, D, seed=0, scale=3.0, H=12):
  """Slot logits [B, D, C] that depend on every input state, the mask and the global step; -inf on the empty
  slots of each variable's state (as upscale_spec.slot_log_probs gives them)."""
  levels, slots = stages.levels, stages.slots
  S, C, N = slots.shape[0], slots.max() + 1, levels.max() + 1
  valid = np.zeros((S, N, C), bool)
  for s in range(S):
    valid[s, levels[s], slots[s]] = True
  r = np.random.default_rng(seed)
  E, A = r.normal(size=(N, H)), r.normal(size=(D, D)) / np.sqrt(D)
  M, T = r.normal(size=(D, H)), 0.3 * r.normal(size=(S * D, H))
  W = scale * r.normal(size=(H, C)) / np.sqrt(H)

  def predict(x_BxD, known_BxD, t):
    assert x_BxD.dtype == np.int32 and known_BxD.dtype == bool and isinstance(t, int)
    f = np.einsum("ij,bjh->bih", A, E[x_BxD]) + known_BxD[..., None] * M[None] + T[t][None, None]
    logits = (np.tanh(f) @ W).astype(np.float32)
    return np.where(valid[t // D][x_BxD], logits, -np.inf).astype(np.float32)

  return predict


def mixture_params(rng, shape, M, spread=1.0):
  """Unpacked mixture parameters [..., 3M] as DiscretisedLogisticMixture.unpack returns them (float32)."""
  log_pi = rng.normal(size=shape + (M,)) * 2
  log_pi = log_pi - np.logaddexp.reduce(log_pi, axis=-1, keepdims=True)
  means = rng.uniform(-1, 1, size=shape + (M,)) * spread
  log_scales = rng.uniform(-7, 0, size=shape + (M,))
  return np.concatenate([log_pi, means, log_scales], axis=-1).astype(np.float32)


class QuantisedNll:
  """A full-output toy predict as a positions-only one that adds up, per item, -log2 of the quantised probability
  (`quantise_counts`) of every symbol the walk codes: what the coder should pay, computed beside the walk."""

  positions_only = True

  def __init__(self, predict, x_BxD, stages=None):
    self.predict, self.x = predict, np.asarray(x_BxD)
    self.slots = None if stages is None else np.asarray(stages.slots)
    self.bits = np.zeros(len(self.x))

  def __call__(self, x_in, known, t, pos):
    params = self.predict(x_in, known, t)[:, pos]
    sym = self.x[:, pos] if self.slots is None else self.slots[t // self.x.shape[1]][self.x[:, pos]]
    counts = np.take_along_axis(entropy_models.quantise_counts(params), sym[..., None].astype(np.int64), -1)[..., 0]
    self.bits += (entropy_models.PRECISION - np.log2(counts.astype(np.float64))).sum(axis=1)
    return params


def quantised_nll_bits(predict, x_BxD, sigma, policy, num_classes, stages=None):
  """Per item, the bits the coder pays under its quantised tables (before ANS overhead), float64 [B]: one walk
  over the items with the same calls as the encoder."""
  meter = QuantisedNll(predict, x_BxD, stages)
  walk.encode_items(meter, x_BxD, sigma, policy, num_classes, stages)
  return meter.bits
