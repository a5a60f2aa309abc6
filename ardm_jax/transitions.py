"""Coarse-to-fine transitions of an upscale ARDM: which state each data value has at each level (NumPy only).

An upscale ARDM (Hoogeboom et al., 2022, section 4) generates in S stages, coarse to fine. A `Transitions` object
fixes the coarse representations: level l = 0..S of data value k is the state `levels[l, k]`; level S is the data
itself and level 0 one absorbing state. Stage s refines every variable from its level-s state to its level-(s+1)
state by choosing one of the coarse state's children, numbered by "slots" 0..C-1 (for the digit transitions slot j
is the next base-b digit j).

States live in one id space 0..N-1 shared by all levels (N = `num_states`, the network's number of input classes).
The zero-least-significant-digit transitions use data values with their low digits set to zero as states (N = K,
absorbing state 0); the augmented ones give every level its own ids (N > K), so a state's level can be read from
its id alone.

This module holds only the NumPy tables and their constructors, no network and no traced code: the tables are
built and checked once on the host, and the entropy coder reads them as they are. The JAX math that uses them lives in `upscale_spec` (the
per-variable conditionals) and `upscale` (ELBO, likelihood and sampling over stages).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ardm_jax import ardm
from ardm_jax.alphabets import TEXT8_ALPHABET

TRANSITION_MODES = ("zero_least_significant", "augment_least_significant", "text8", "single_stage")
TEXT8_VOWELS = "aeiou"


@dataclasses.dataclass(frozen=True, eq=False)
class Transitions:
  """Coarse-to-fine levels of every data value, and the slot each refinement step takes.

  The levels and slots must form a tree: every level is a function of the next finer one, each (parent, slot)
  names one child and each child sits in one slot. The derived tables below are computed once in
  `__post_init__` (host NumPy) and are compact even for K = 65,536.

  Attributes:
    name: a label for messages and `repr`.
    levels: int32 [S+1, K]; `levels[l, k]` is the state of data value k at level l. `levels[0]` is one absorbing
      state for every k and `levels[S] == arange(K)`.
    slots: int32 [S, K]; `slots[s, k]` is the slot (0..C-1) of `levels[s+1, k]` among the children of
      `levels[s, k]`.
    digit_base: b for the base-b digit transitions (slot = digit), else None.
    num_classes: K, the number of data values.
    num_stages: S.
    num_states: N, the size of the state id space shared by all levels.
    num_slots: C, the most children any state has.
    absorbing_state: the level-0 state.
    parents: int32 [S, N]; the level-s state of each level-(s+1) state, -1 for ids that are not level-(s+1)
      states.
    child_rows: int32 [S, N]; the row of a level-s state in `child_table`, -1 if it is not a level-s state.
    child_table: int32 [S, R, C]; the child in each slot of each level-s state, -1 for an empty slot (R = the
      most states on one level).
    slots_are_classes: True for the plain OA-ARDM as one stage (`single_stage`): slot j is data value j.
    range_lo: int32 [S+1, N] or None; when every state's preimage is a contiguous range of data values, the
      data values under state u at level l are `range_lo[l, u]..range_hi[l, u]`; None otherwise.
    range_hi: int32 [S+1, N] or None; see `range_lo`.

  Raises:
    ValueError: if the arrays have the wrong shapes or dtypes, level S is not the data, level 0 is not a single
      state, or the levels and slots do not form a tree.
  """

  name: str
  levels: np.ndarray
  slots: np.ndarray
  digit_base: int | None = None

  def __post_init__(self):
    levels = np.asarray(self.levels)
    slots = np.asarray(self.slots)
    if levels.ndim != 2 or levels.shape[0] < 2 or levels.shape[1] < 2 or not np.issubdtype(levels.dtype, np.integer):
      raise ValueError(f"levels must be an integer array [S+1, K] with S >= 1 and K >= 2, got {levels.shape}")
    num_levels, num_classes = levels.shape
    if slots.shape != (num_levels - 1, num_classes) or not np.issubdtype(slots.dtype, np.integer):
      raise ValueError(f"slots must be an integer array [S, K] = {(num_levels - 1, num_classes)}, got {slots.shape}")
    if levels.min() < 0 or slots.min() < 0:
      raise ValueError("states and slots must be non-negative")
    if not np.array_equal(levels[-1], np.arange(num_classes)):
      raise ValueError("the last level must be the data itself: levels[S] == arange(K)")
    if np.unique(levels[0]).size != 1:
      raise ValueError("level 0 must be a single absorbing state for every data value")
    num_states = int(levels.max()) + 1
    num_slots = int(slots.max()) + 1
    num_stages = num_levels - 1
    num_rows = max(np.unique(levels[s]).size for s in range(num_stages))
    parents = np.full((num_stages, num_states), -1, np.int64)
    child_rows = np.full((num_stages, num_states), -1, np.int64)
    child_table = np.full((num_stages, num_rows, num_slots), -1, np.int64)
    for s in range(num_stages):
      coarse, fine, slot = levels[s], levels[s + 1], slots[s]
      present = np.unique(coarse)
      child_rows[s, present] = np.arange(present.size)
      slot_of_fine = np.full(num_states, -1, np.int64)
      # A tree: each level is a function of the next finer one, each (parent, slot) names one child, and each
      # child sits in one slot. Fancy assignment keeps one of several conflicting writes; reading back finds it.
      for what, table, idx, val in (
        ("parent", parents[s], fine, coarse),
        ("child in one slot", child_table[s], (child_rows[s, coarse], slot), fine),
        ("slot", slot_of_fine, fine, slot),
      ):
        table[idx] = val
        if not np.array_equal(table[idx], val):
          raise ValueError(f"stage {s}: a state has more than one {what}; levels/slots must form a tree")
    lo = np.zeros((num_levels, num_states), np.int64)
    hi = np.full((num_levels, num_states), num_classes - 1, np.int64)
    contiguous = True
    for level in range(num_levels):
      # np.unique's first occurrences are the smallest data values; on the reversed row, the largest.
      states, first, count = np.unique(levels[level], return_index=True, return_counts=True)
      _, first_rev = np.unique(levels[level][::-1], return_index=True)
      last = num_classes - 1 - first_rev
      contiguous &= bool(np.all(last - first + 1 == count))
      lo[level, states], hi[level, states] = first, last
    # The plain OA-ARDM as one stage: every class is a child of the absorbing state, in its own slot.
    single = num_stages == 1 and np.array_equal(slots[0], np.arange(num_classes))
    derived = dict(
      levels=levels.astype(np.int32),
      slots=slots.astype(np.int32),
      num_classes=num_classes,
      num_stages=num_stages,
      num_states=num_states,
      num_slots=num_slots,
      absorbing_state=int(levels[0, 0]),
      parents=parents.astype(np.int32),
      child_rows=child_rows.astype(np.int32),
      child_table=child_table.astype(np.int32),
      slots_are_classes=bool(single),
      range_lo=lo.astype(np.int32) if contiguous else None,
      range_hi=hi.astype(np.int32) if contiguous else None,
    )
    for name, value in derived.items():
      object.__setattr__(self, name, value)

  # Declared for type checkers; set in __post_init__.
  num_classes: int = dataclasses.field(init=False)
  num_stages: int = dataclasses.field(init=False)
  num_states: int = dataclasses.field(init=False)
  num_slots: int = dataclasses.field(init=False)
  absorbing_state: int = dataclasses.field(init=False)
  parents: np.ndarray = dataclasses.field(init=False)
  child_rows: np.ndarray = dataclasses.field(init=False)
  child_table: np.ndarray = dataclasses.field(init=False)
  slots_are_classes: bool = dataclasses.field(init=False)
  range_lo: np.ndarray | None = dataclasses.field(init=False)
  range_hi: np.ndarray | None = dataclasses.field(init=False)

  def __repr__(self) -> str:
    return (
      f"Transitions({self.name!r}, K={self.num_classes}, stages={self.num_stages}, states={self.num_states}, "
      f"slots={self.num_slots})"
    )


def _num_digits(num_classes: int, base: int) -> int:
  """The smallest S with base**S >= K (integer arithmetic: float logs misround exact powers)."""
  stages, capacity = 0, 1
  while capacity < num_classes:
    capacity *= base
    stages += 1
  return stages


def _check_digits(num_classes, base) -> tuple[int, int]:
  """(K, b) as ints after checking K >= 2 and b >= 2."""
  return ardm.check_int("num_classes", num_classes, 2), ardm.check_int("branch factor", base, 2)


def zero_least_significant(num_classes: int, base: int) -> Transitions:
  """Base-b digit transitions whose states are data values: level l keeps the l most significant digits.

  S = ceil(log_b K) stages; stage s generates digit S-1-s (most significant first) and the slot is that digit.
  A state is a data value with its low digits set to zero, so N = K and the absorbing state is 0. When K is not a
  power of b some digits have no data value under them (empty slots).

  Args:
    num_classes: K >= 2, the number of data values.
    base: the branch factor b >= 2.

  Returns:
    The transitions, with `digit_base=b` and contiguous ranges.

  Raises:
    ValueError: if K or b is not an integer >= 2.
  """
  num_classes, base = _check_digits(num_classes, base)
  stages = _num_digits(num_classes, base)
  k = np.arange(num_classes)
  levels = np.stack([(k // base ** (stages - l)) * base ** (stages - l) for l in range(stages + 1)])
  slots = np.stack([(k // base ** (stages - 1 - s)) % base for s in range(stages)])
  return Transitions(f"zero_least_significant(b={base})", levels, slots, digit_base=base)


def augment_least_significant(num_classes: int, base: int) -> Transitions:
  """Base-b digit transitions in which every level has its own state ids (N > K).

  Level l's state of k is its prefix `k // b**(S-l)` offset past the ids of all finer levels: the data 0..K-1
  come first and the absorbing state last, so a network input reveals its level.

  Args:
    num_classes: K >= 2, the number of data values.
    base: the branch factor b >= 2.

  Returns:
    The transitions, with `digit_base=b` and the same slots as `zero_least_significant(K, b)`.

  Raises:
    ValueError: if K or b is not an integer >= 2.
  """
  num_classes, base = _check_digits(num_classes, base)
  stages = _num_digits(num_classes, base)
  k = np.arange(num_classes)
  levels = np.zeros((stages + 1, num_classes), np.int64)
  offset = 0
  for l in range(stages, -1, -1):
    prefix = k // base ** (stages - l)
    levels[l] = offset + prefix
    offset += int(prefix.max()) + 1
  slots = np.stack([(k // base ** (stages - 1 - s)) % base for s in range(stages)])
  return Transitions(f"augment_least_significant(b={base})", levels, slots, digit_base=base)


def text8_two_stage(alphabet: str | None = None) -> Transitions:
  """Two stages on the text8 alphabet: first space / vowel / consonant, then the character.

  A space is already exact after the first stage (its state is the data id of ' '); 'vowel' and 'consonant' are
  the extra states K and K+1 and the absorbing state is K+2. Vowels are a, e, i, o, u. The preimages are not
  contiguous ranges, so the 'data' parametrisation needs a distribution with `log_pmf`.

  Args:
    alphabet: the K symbols, data id = position; it must contain a space and no repeats. None: text8's
      ' ' + a..z.

  Returns:
    The two-stage transitions (N = K + 3).

  Raises:
    ValueError: if the alphabet has no space or repeats a symbol.
  """
  if alphabet is None:
    alphabet = TEXT8_ALPHABET
  if " " not in alphabet or len(set(alphabet)) != len(alphabet):
    raise ValueError(f"text8 upscaling needs an alphabet with a space and no repeats, got {alphabet!r}")
  num_classes = len(alphabet)
  space, vowel, consonant, absorbing = alphabet.index(" "), num_classes, num_classes + 1, num_classes + 2
  coarse = np.array([space if c == " " else (vowel if c in TEXT8_VOWELS else consonant) for c in alphabet])
  levels = np.stack([np.full(num_classes, absorbing), coarse, np.arange(num_classes)])
  slots = np.zeros((2, num_classes), np.int64)
  for s in range(2):
    for parent in np.unique(levels[s]):
      members = np.flatnonzero(levels[s] == parent)
      kids = np.unique(levels[s + 1][members])
      slots[s, members] = np.searchsorted(kids, levels[s + 1][members])
  return Transitions("text8", levels, slots)


def single_stage(num_classes: int) -> Transitions:
  """The plain OA-ARDM as a one-stage upscale model.

  Level 0 is the dedicated absorbing class K (N = K + 1 input classes, as in `ardm`), level 1 the data, and slot
  j is class j. With the 'data' parametrisation this runs an OA-ARDM with any output distribution (the
  discretised logistic mixture for 16-bit audio).

  Args:
    num_classes: K >= 2.

  Returns:
    One-stage transitions with `slots_are_classes=True`.

  Raises:
    ValueError: if K is not an integer >= 2.
  """
  num_classes = ardm.check_int("num_classes", num_classes, 2)
  k = np.arange(num_classes)
  return Transitions("single_stage", np.stack([np.full(num_classes, num_classes), k]), k[None])


def make_transitions(mode: str, num_classes: int, branch_factor: int | None = None) -> Transitions:
  """The transitions a config names.

  Args:
    mode: one of `TRANSITION_MODES`: 'zero_least_significant' or 'augment_least_significant' (base-b digits),
      'text8' (space / vowel / consonant first) or 'single_stage' (the plain OA-ARDM).
    num_classes: K, the data set's number of values (27 for 'text8').
    branch_factor: b, required by the digit modes and ignored by the others.

  Returns:
    The transitions.

  Raises:
    ValueError: for an unknown mode, a digit mode without a branch factor, or 'text8' with K != 27.
  """
  if mode in ("zero_least_significant", "augment_least_significant"):
    if branch_factor is None:
      raise ValueError(f"upscale mode {mode!r} needs a branch factor; set it (e.g. 2, 4 or 16)")
    fn = zero_least_significant if mode == "zero_least_significant" else augment_least_significant
    return fn(num_classes, branch_factor)
  if mode == "single_stage":
    return single_stage(num_classes)
  if mode == "text8":
    tr = text8_two_stage()
    if num_classes != tr.num_classes:
      raise ValueError(f"text8 upscaling is for the 27-symbol text8 alphabet, got K={num_classes}; use a digit mode")
    return tr
  raise ValueError(f"unknown upscale mode {mode!r}; use one of {TRANSITION_MODES}")
