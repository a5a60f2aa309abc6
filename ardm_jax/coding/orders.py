"""Seeded orders: a container stores a seed, and both sides derive the same orders sigma_s from it.

sigma_s = `stage_orders(seed, D, S)[s]`: stage s ranks the SplitMix64 outputs s*D+1 .. (s+1)*D of the seed's
stream, so stage 0 is `order_from_seed(seed, D)` (the order of one-stage files) and later stages continue the
same stream (independent orders, nothing else stored). Only exact uint64 arithmetic is involved, so the orders
are the same on every platform and NumPy version; they are part of the file format.
"""

from __future__ import annotations

import numpy as np

from ardm_jax.coding.checks import MAX_STAGES, MAX_SYMBOLS, check_uint


def _splitmix_keys(seed: int, first: int, D: int) -> np.ndarray:
  """SplitMix64 outputs first+1 .. first+D of the stream of `seed` (exact uint64 arithmetic)."""
  with np.errstate(over="ignore"):
    index = np.arange(first + 1, first + D + 1, dtype=np.uint64)
    z = np.uint64(seed) + index * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ranks(keys: np.ndarray) -> np.ndarray:
  sigma = np.empty(keys.size, np.int32)
  sigma[np.argsort(keys, kind="stable")] = np.arange(keys.size, dtype=np.int32)
  return sigma


def order_from_seed(seed: int, D: int) -> np.ndarray:
  """The order of a one-stage file: variables ranked by their SplitMix64(seed, i) keys (all distinct).

  Args:
    seed: the order seed, an integer in [0, 2**64).
    D: variables per item, >= 1.

  Returns:
    sigma int32 [D]: sigma[i] is the generation step of variable i.

  Raises:
    ValueError: seed or D out of range.
  """
  seed, D = check_uint(seed, "order seed", 1 << 64), check_uint(D, "D", MAX_SYMBOLS + 1)
  if D < 1:
    raise ValueError("D must be >= 1")
  return _ranks(_splitmix_keys(seed, 0, D))


def stage_orders(seed: int, D: int, num_stages: int = 1) -> np.ndarray:
  """The orders of all S stages: stage s ranks SplitMix64 outputs s*D+1 .. (s+1)*D of the seed's stream.

  Args:
    seed: the order seed, an integer in [0, 2**64).
    D: variables per item, >= 1.
    num_stages: S, 1 .. MAX_STAGES.

  Returns:
    sigma int32 [S, D]; row 0 equals `order_from_seed(seed, D)`.

  Raises:
    ValueError: an argument out of range.
  """
  seed, D = check_uint(seed, "order seed", 1 << 64), check_uint(D, "D", MAX_SYMBOLS + 1)
  S = check_uint(num_stages, "num_stages", MAX_STAGES + 1)
  if D < 1 or S < 1:
    raise ValueError(f"D and num_stages must be >= 1, got {D} and {S}")
  return np.stack([_ranks(_splitmix_keys(seed, s * D, D)) for s in range(S)])


def check_orders(sigma, D: int, num_stages: int = 1) -> np.ndarray:
  """Checks orders given to the walk: one permutation of 0..D-1 per stage.

  Args:
    sigma: integer [S, D]; a single order [D] is accepted for S = 1.
    D: variables per item.
    num_stages: S.

  Returns:
    The orders as int64 [S, D].

  Raises:
    ValueError: wrong shape or not permutations.
  """
  a = np.asarray(sigma)
  if num_stages == 1 and a.ndim == 1:
    a = a[None]
  if a.ndim != 2 or a.shape[0] != num_stages or not np.issubdtype(a.dtype, np.integer) or a.shape[1] != D:
    want = f"[D] = [{D}]" if num_stages == 1 else f"[S, D] = [{num_stages}, {D}]"
    raise ValueError(
      f"sigma must be integer orders of shape {want}, got shape {a.shape}; use "
      f"{'order_from_seed(seed, D)' if num_stages == 1 else 'stage_orders(seed, D, S)'}"
    )
  if not np.array_equal(np.sort(a, axis=1), np.broadcast_to(np.arange(D), a.shape)):
    raise ValueError("sigma must be a permutation of 0..D-1 per stage; use order_from_seed / stage_orders")
  return a.astype(np.int64)
