"""Argument checks and size limits shared by the coding modules.

Every module of the coder validates the same few things (integers from a file, class counts, items, global
policies) with the same messages; they live here so that a limit changes in one place.
"""

from __future__ import annotations

import numpy as np

from ardm_jax.coding.entropy_models import PRECISION

MAX_STAGES = 64  # digit transitions of K <= 2**24 with b = 2 need 24; anything far above is a corrupt header
MAX_SYMBOLS = 1 << 31  # N * S * D above this is rejected before anything is allocated


def check_uint(v, what: str, bound: int) -> int:
  """Checks that `v` is an integer (not a bool) in [0, bound).

  Args:
    v: the value (Python or NumPy integer).
    what: its name, for the error message.
    bound: the exclusive upper bound.

  Returns:
    `v` as a Python int.

  Raises:
    ValueError: `v` is not such an integer.
  """
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < bound:
    raise ValueError(f"{what} must be an integer in [0, {bound}), got {v!r}")
  return int(v)


def check_num_classes(num_classes) -> int:
  """Checks a class count K: an integer in [2, 2**24 - 1), so every class keeps a count >= 1.

  Returns:
    K as a Python int.

  Raises:
    ValueError: K is out of range or not an integer.
  """
  if (
    isinstance(num_classes, (bool, np.bool_))
    or not isinstance(num_classes, (int, np.integer))
    or not 2 <= num_classes < (1 << PRECISION) - 1
  ):
    raise ValueError(f"num_classes must be an integer in [2, 2**24 - 1), got {num_classes!r}")
  return int(num_classes)


def check_items(x_BxD, num_classes: int) -> np.ndarray:
  """Checks flattened items: integer [B, D] with B, D >= 1 and values in 0..K-1.

  Args:
    x_BxD: the items, any integer dtype, [B, D].
    num_classes: K.

  Returns:
    The items as int32 [B, D].

  Raises:
    ValueError: wrong shape, dtype or values.
  """
  x = np.asarray(x_BxD)
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"items must be an integer array [B, D] with B, D >= 1, got {x.dtype} {x.shape}")
  check_num_classes(num_classes)
  if x.min() < 0 or x.max() >= num_classes:
    raise ValueError(f"item values must lie in 0..{num_classes - 1}, got {x.min()}..{x.max()}")
  return x.astype(np.int32)


def check_policy(policy, D: int, num_stages: int = 1) -> np.ndarray:
  """Checks a global policy: increasing steps from 0, below S * D, containing every stage start s * D.

  Args:
    policy: the global step starts, integer [P].
    D: variables per item.
    num_stages: S (1 for a plain OA-ARDM, whose policy is an ordinary one over D steps).

  Returns:
    The steps as int64 [P].

  Raises:
    ValueError: the policy is malformed.
  """
  steps = np.asarray(policy)
  if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer):
    raise ValueError(f"a policy must be a non-empty 1-D list of integer step starts, got {policy!r}")
  steps = steps.astype(np.int64)
  total = num_stages * D
  if steps[0] != 0 or np.any(np.diff(steps) <= 0) or steps[-1] >= total:
    if num_stages == 1:
      raise ValueError(f"a policy must start at 0 and strictly increase below D={D}, got {steps.tolist()}")
    raise ValueError(
      f"a policy for {num_stages} stages of D={D} steps must start at 0 and strictly increase "
      f"below S*D={total}, got {steps[:8].tolist()}{' ...' if steps.size > 8 else ''}"
    )
  missing = np.setdiff1d(np.arange(0, total, D), steps)
  if missing.size:
    raise ValueError(
      f"a policy for {num_stages} stages of D={D} steps must contain every stage start s*D; "
      f"missing {missing[:5].tolist()}; build it with upscale.flatten_policies"
    )
  return steps
