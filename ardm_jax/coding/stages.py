"""What the coding walk needs of an upscale model's transitions: the tree of states and the slots.

An upscale ARDM codes each variable S times, coarse to fine. Its transitions are any object with NumPy `levels`
int [S+1, K] and `slots` int [S, K] (such as an `transitions.Transitions`; duck-typed, so the coder needs no JAX):
level l = 0..S of data value k is the state `levels[l, k]` (level 0 one absorbing state, level S the data), and
stage s codes the slot `slots[s, k]` (0..C-1, C = slots.max() + 1) that picks the level-(s+1) state among the
children of the level-s state. A plain OA-ARDM (`stages=None`) is the one-stage case with levels
[[K]*K, 0..K-1] and slots [0..K-1]: absorbing class K, slots = classes, and the same bits as a plain walk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ardm_jax.coding.checks import MAX_STAGES, check_num_classes
from ardm_jax.coding.entropy_models import PRECISION


@dataclasses.dataclass(frozen=True, eq=False)
class Stages:
  """Checked and indexed transitions (build with `index_stages`).

  Attributes:
    levels: int64 [S+1, K], the state of each data value at each level.
    slots: int64 [S, K], the slot each data value takes in each stage.
    num_slots: C, the number of slots (symbols) per coded variable.
    child_keys: per stage, the sorted keys coarse * C + slot of every existing child.
    child_states: per stage, the child state of each key.
  """

  levels: np.ndarray
  slots: np.ndarray
  num_slots: int
  child_keys: tuple
  child_states: tuple

  @property
  def num_stages(self) -> int:
    """S, the number of stages (the rows of `slots`)."""
    return self.slots.shape[0]

  def child(self, stage: int, coarse: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The decoder's move: the level-(s+1) state in `slot` of each level-s state.

    Args:
      stage: s.
      coarse: int level-s states, any shape.
      slot: int slots, the same shape.

    Returns:
      int64 states of that shape; -1 where the slot is empty (a corrupt payload).
    """
    keys = self.child_keys[stage]
    key = coarse.astype(np.int64) * self.num_slots + slot.astype(np.int64)
    i = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
    return np.where(keys[i] == key, self.child_states[stage][i], -1)


def index_stages(stages, num_classes: int) -> Stages:
  """Checks and indexes transitions for the walk.

  Args:
    stages: None (a plain OA-ARDM) or an object with `levels` int [S+1, K] and `slots` int [S, K].
    num_classes: K, the data classes.

  Returns:
    The indexed `Stages`.

  Raises:
    ValueError: the levels and slots are malformed or do not form a tree.
  """
  K = check_num_classes(num_classes)
  if stages is None:
    levels, slots = np.stack([np.full(K, K), np.arange(K)]), np.arange(K)[None]
  else:
    levels, slots = np.asarray(getattr(stages, "levels", None)), np.asarray(getattr(stages, "slots", None))
    ok = (
      levels.ndim == 2
      and np.issubdtype(levels.dtype, np.integer)
      and levels.shape[1] == K
      and 2 <= levels.shape[0] <= MAX_STAGES + 1
      and np.issubdtype(slots.dtype, np.integer)
      and slots.shape == (levels.shape[0] - 1, K)
    )
    if not ok:
      raise ValueError(
        f"stages must have integer levels [S+1, K={K}] and slots [S, K] with 1 <= S <= "
        f"{MAX_STAGES}, got {levels.shape} and {slots.shape}; pass an transitions.Transitions"
      )
    if (
      levels.min() < 0
      or slots.min() < 0
      or not np.array_equal(levels[-1], np.arange(K))
      or np.unique(levels[0]).size != 1
    ):
      raise ValueError(
        "stages must have non-negative states and slots, one absorbing state at level 0 and "
        "the data itself at level S; pass an transitions.Transitions"
      )
  levels, slots = levels.astype(np.int64), slots.astype(np.int64)
  C = int(slots.max()) + 1
  if C < 2 or C >= (1 << PRECISION) - 1:
    raise ValueError(f"stages must use 2 .. 2**24 - 2 slots, got {C}")
  child_keys, child_states = [], []
  for s in range(slots.shape[0]):
    key = levels[s] * C + slots[s]
    order = np.argsort(key, kind="stable")
    key, fine = key[order], levels[s + 1][order]
    dup = np.flatnonzero(np.diff(key) == 0)
    if np.any(fine[dup] != fine[dup + 1]):  # the decoder could not tell which child a slot means
      raise ValueError(
        f"stage {s}: one (coarse state, slot) pair leads to two different states; levels and "
        "slots must form a tree (build them with ardm_jax.upscale)"
      )
    keep = np.append(True, np.diff(key) != 0)
    child_keys.append(key[keep])
    child_states.append(fine[keep])
  return Stages(levels, slots, C, tuple(child_keys), tuple(child_states))


def num_stages_of(stages) -> int:
  """S, the number of stages, of a `stages` argument.

  Args:
    stages: None (a plain OA-ARDM) or an object with `slots` int [S, K].

  Returns:
    1 for None, else the rows of its `slots`.

  Raises:
    ValueError: `stages` has no 2-D slots.
  """
  if stages is None:
    return 1
  slots = np.asarray(getattr(stages, "slots", None))
  if slots.ndim != 2:
    raise ValueError("stages must have integer slots [S, K] (and levels [S+1, K]); pass an transitions.Transitions")
  return int(slots.shape[0])
