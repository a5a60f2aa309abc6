"""Seeded orders: part of the file format, checked against an independent plain-integer SplitMix64."""

import numpy as np
import pytest

from ardm_jax.coding import orders


def splitmix64(seed, i):
  """Output i (0-based) of SplitMix64 seeded with `seed`, in plain Python integers: an independent check of the
  NumPy version the container format uses for orders."""
  mask = (1 << 64) - 1
  z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
  return z ^ (z >> 31)


def test_order_from_seed():
  s = orders.order_from_seed(0, 10)
  assert s.dtype == np.int32
  np.testing.assert_array_equal(np.sort(s), np.arange(10))
  np.testing.assert_array_equal(s, orders.order_from_seed(0, 10))
  # Golden value: the order is part of the file format. Update only together with FORMAT_VERSION.
  np.testing.assert_array_equal(s, [7, 5, 0, 9, 1, 4, 2, 6, 3, 8])
  # The same ranks from a plain-integer SplitMix64, written independently of the NumPy version.
  for seed, D in ((0, 10), (12345, 37), (2**64 - 1, 9)):
    keys = [splitmix64(seed, i) for i in range(D)]
    ranks = {i: r for r, i in enumerate(sorted(range(D), key=keys.__getitem__))}
    np.testing.assert_array_equal(orders.order_from_seed(seed, D), [ranks[i] for i in range(D)])
  assert not np.array_equal(s, orders.order_from_seed(1, 10))
  assert orders.order_from_seed(2**64 - 1, 5).shape == (5,)
  with pytest.raises(ValueError, match="seed"):
    orders.order_from_seed(-1, 5)


def test_stage_orders():
  o = orders.stage_orders(5, 9, 3)
  assert o.shape == (3, 9) and o.dtype == np.int32
  np.testing.assert_array_equal(o[0], orders.order_from_seed(5, 9))
  for s in range(3):
    np.testing.assert_array_equal(np.sort(o[s]), np.arange(9))
  assert not np.array_equal(o[1], o[0]) and not np.array_equal(o[2], o[1])
  # Golden value: stage s ranks SplitMix64 outputs s*D+1 .. (s+1)*D of the seed's stream (file format).
  np.testing.assert_array_equal(orders.stage_orders(0, 5, 2)[0], orders.order_from_seed(0, 5))

  keys = [splitmix64(5, 9 + i) for i in range(9)]
  ranks = {i: r for r, i in enumerate(sorted(range(9), key=keys.__getitem__))}
  np.testing.assert_array_equal(o[1], [ranks[i] for i in range(9)])
