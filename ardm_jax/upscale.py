"""Upscale ARDMs (Hoogeboom et al., 2022, section 4): transitions and the stage-wise OA-ARDM math, no network.

An upscale ARDM generates in S stages, coarse to fine. A `Transitions` object fixes the coarse representations:
level l = 0..S of a data value k is the state `levels[l, k]`; level S is the data itself, level 0 the single
absorbing state. Stage s (s = 0..S-1) is an OA-ARDM over all D variables that refines every variable from its
level-s state to its level-(s+1) state, conditioned on everything the earlier stages produced. Its choices for a
variable are the children of the variable's coarse state, numbered by "slots" 0..C-1 (for the digit transitions
slot j is the next base-b digit j). NLL = sum over stages of each stage's NLL.

What the network sees at stage s, step t (one call, like the OA-ARDM):
  x_in[i]  = the level-(s+1) state of variable i if it is already refined in this stage (sigma_s[i] < t),
             else its level-s state (which already carries everything the earlier stages generated);
  known[i] = sigma_s[i] < t, for this stage's order sigma_s;
  t_net    = s * D + t, so one time embedding over S * D steps tells the network the stage and the step.
States live in one id space 0..N-1 shared by all levels (N = Transitions.num_states, the network's number of
input classes). For the zero-least-significant-digit transitions a state is a data value with its low digits set
to zero (N = K, absorbing state 0); the augmented transitions give every level its own ids (N > K), so a value's
level can be read from its id alone.

Two parametrisations of p(level s+1 | level s):
  'data':   the network predicts a distribution over the K data values (any `distributions` object: a categorical,
            or a discretised logistic mixture for 16-bit audio); the probability of a child is the mass of the data
            values under it, renormalised over the data values under the coarse state. With contiguous preimages
            (the digit transitions) these are range masses: O(M) per variable for an M-component logistic mixture,
            so 16-bit audio never needs a K-sized table.
  'direct': the network predicts S * C logits per variable; stage s uses its own C, masked to the coarse
            state's existing children (K not a power of b leaves some digits without data values).
`single_stage(K)` is the plain OA-ARDM in this form (one stage under the dedicated absorbing class K; t_net = t),
which is how an OA-ARDM runs with a non-categorical output distribution; its slots are the classes themselves, so
sampling and coding tables come from the distribution directly.

Orders are per stage, sigma_BxSxD. A policy for all stages is one increasing array of global step starts
g = s * D + t that contains every stage start s * D (`flatten_policies` builds it from per-stage policies), so
one `lax.scan` walks all stages and a policy step never spans two stages. Losses are in nats per example.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import ardm
from ardm_jax import policy as policy_lib
from ardm_jax.distributions import Categorical

ApplyFn = ardm.ApplyFn
PARAMETRISATIONS = ("data", "direct")
TRANSITION_MODES = ("zero_least_significant", "augment_least_significant", "text8", "single_stage")
TEXT8_VOWELS = "aeiou"


# ----------------------------------------------------------------------------------------------- transitions
@dataclasses.dataclass(frozen=True, eq=False)
class Transitions:
  """Coarse-to-fine levels of every data value, and the slot each refinement step takes.

  levels: int [S+1, K]; levels[l, k] is the state of data value k at level l; levels[0] is one absorbing state
    for every k and levels[S] = arange(K).
  slots: int [S, K]; slots[s, k] is the slot (0..C-1) of levels[s+1, k] among the children of levels[s, k].
  digit_base: b for the base-b digit transitions (slot = digit), None otherwise.
  Derived tables (numpy): parents [S, N] (the level-s state of a level-(s+1) state; -1 for ids that are not
  level-(s+1) states); child_rows [S, N] (row of a level-s state in child_table; -1 if not a level-s state) and
  child_table [S, R, C] (the child in each slot, -1 for an empty slot; R = most states on a level), compact even
  for K = 65,536; range_lo/range_hi [S+1, N] (the data values under a state are the range [lo, hi]) when every
  state's preimage is contiguous, else None.
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

  def children_of(self, stage: int, state: int) -> np.ndarray:
    """int [C]: the level-(stage+1) child in each slot of a level-`stage` state (-1: empty slot)."""
    row = self.child_rows[stage, state]
    return self.child_table[stage, row] if row >= 0 else np.full(self.num_slots, -1, np.int32)

  def level_matrix(self, level: int) -> np.ndarray:
    """float [N, K]: column k is the one-hot level-`level` state of data value k."""
    m = np.zeros((self.num_states, self.num_classes), np.float32)
    m[self.levels[level], np.arange(self.num_classes)] = 1.0
    return m

  def stage_matrix(self, stage: int) -> np.ndarray:
    """float [N, N]: the forward (diffusion) map of `stage`, from a one-hot level-(stage+1) state to its level-stage
    state; columns of states that do not occur at level stage+1 are zero."""
    m = np.zeros((self.num_states, self.num_states), np.float32)
    fine = np.flatnonzero(self.parents[stage] >= 0)
    m[self.parents[stage][fine], fine] = 1.0
    return m

  def __repr__(self) -> str:
    return (
      f"Transitions({self.name!r}, K={self.num_classes}, stages={self.num_stages}, states={self.num_states}, "
      f"slots={self.num_slots})"
    )


def _num_digits(num_classes: int, base: int) -> int:
  """Smallest S with base**S >= K (integer arithmetic: float logs misround exact powers)."""
  stages, capacity = 0, 1
  while capacity < num_classes:
    capacity *= base
    stages += 1
  return stages


def _check_digits(num_classes, base) -> tuple[int, int]:
  return ardm.check_int("num_classes", num_classes, 2), ardm.check_int("branch factor", base, 2)


def zero_least_significant(num_classes: int, base: int) -> Transitions:
  """Level l keeps the l most significant base-b digits of a value and sets the others to zero.

  S = ceil(log_b K) stages; stage s generates digit S-1-s (most significant first). States are data values
  (N = K) and the absorbing state is 0.
  """
  num_classes, base = _check_digits(num_classes, base)
  stages = _num_digits(num_classes, base)
  k = np.arange(num_classes)
  levels = np.stack([(k // base ** (stages - l)) * base ** (stages - l) for l in range(stages + 1)])
  slots = np.stack([(k // base ** (stages - 1 - s)) % base for s in range(stages)])
  return Transitions(f"zero_least_significant(b={base})", levels, slots, digit_base=base)


def augment_least_significant(num_classes: int, base: int) -> Transitions:
  """Like zero_least_significant, but every level gets its own state ids: level l's value k // b**(S-l) is stored
  after all finer levels' ids (data 0..K-1 first, the absorbing state last), so N > K."""
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
  """Two stages on the text8 alphabet (' ' + a..z): first space / vowel / consonant, then the character.

  A space is already exact after the first stage (its state is the data id of ' '); 'vowel' and 'consonant' are
  extra states K and K+1, the absorbing state K+2. Vowels are a, e, i, o, u.
  """
  if alphabet is None:
    from ardm_jax.alphabets import TEXT8_ALPHABET as alphabet
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
  """The plain OA-ARDM as a one-stage upscale model: level 0 is the dedicated absorbing class K (N = K + 1
  input classes, as in `ardm`), level 1 the data; a slot is a class. With the 'data' parametrisation this runs an
  OA-ARDM with any output distribution (the discretised logistic for 16-bit audio)."""
  num_classes = ardm.check_int("num_classes", num_classes, 2)
  k = np.arange(num_classes)
  return Transitions("single_stage", np.stack([np.full(num_classes, num_classes), k]), k[None])


def make_transitions(mode: str, num_classes: int, branch_factor: int | None = None) -> Transitions:
  """The transitions named by a config: 'zero_least_significant' / 'augment_least_significant' (need the branch
  factor b), 'text8' (K must be 27) or 'single_stage' (the plain OA-ARDM)."""
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


# ----------------------------------------------------------------------------------------------- the model
@dataclasses.dataclass(frozen=True, eq=False)
class Upscale:
  """Transitions + parametrisation (+ the data distribution for 'data'). Static: close over it, never trace it."""

  transitions: Transitions
  parametrisation: str = "data"
  distribution: Any = None

  def __post_init__(self):
    if self.parametrisation not in PARAMETRISATIONS:
      raise ValueError(f"unknown parametrisation {self.parametrisation!r}; use one of {PARAMETRISATIONS}")
    if self.parametrisation == "direct":
      if self.distribution is not None:
        raise ValueError("the direct parametrisation predicts slot logits itself; pass no distribution")
    else:
      dist = self.distribution if self.distribution is not None else Categorical(self.transitions.num_classes)
      if dist.num_classes != self.transitions.num_classes:
        raise ValueError(
          f"distribution has K={dist.num_classes} but the transitions have "
          f"K={self.transitions.num_classes}; build both for the data set's K"
        )
      if self.transitions.range_lo is None and not hasattr(dist, "log_pmf"):
        raise ValueError("these transitions have non-contiguous preimages, which needs a distribution with log_pmf")
      object.__setattr__(self, "distribution", dist)

  @property
  def num_stages(self) -> int:
    return self.transitions.num_stages

  @property
  def num_classes(self) -> int:
    return self.transitions.num_classes

  @property
  def num_input_classes(self) -> int:
    """Rows of the network's input embedding: every state id."""
    return self.transitions.num_states

  @property
  def num_slots(self) -> int:
    return self.transitions.num_slots

  @property
  def num_outputs(self) -> int:
    """Network outputs per variable."""
    if self.parametrisation == "direct":
      return self.num_stages * self.num_slots
    return self.distribution.num_outputs

  def num_net_steps(self, num_steps: int) -> int:
    """Range of the network's step input t_net = s * D + t (size its time embedding for this many steps)."""
    return self.num_stages * int(num_steps)


def _per_example(table: np.ndarray, row_B: jax.Array, idx: jax.Array) -> jax.Array:
  """table[row_B[b], idx[b, ...]] for a [R, M] table: one gathered row per example."""
  rows_BxM = jnp.asarray(table)[row_B]
  flat = jnp.take_along_axis(rows_BxM, idx.reshape(idx.shape[0], -1).astype(jnp.int32), axis=1)
  return flat.reshape(idx.shape)


def states_at(spec: Upscale, x: jax.Array, level_B: jax.Array) -> jax.Array:
  """The level-`level_B[b]` states of data items x [B, ...] (int32)."""
  return _per_example(spec.transitions.levels, level_B, x)


def parents_of(spec: Upscale, states: jax.Array, stage_B: jax.Array) -> jax.Array:
  """Level-s states of level-(s+1) states (s = stage_B[b]); -1 for ids that are not level-(s+1) states."""
  return _per_example(spec.transitions.parents, stage_B, states)


def slot_of(spec: Upscale, x: jax.Array, stage_B: jax.Array) -> jax.Array:
  """The slot stage s takes for data items x: the symbol an entropy coder codes at that stage."""
  return _per_example(spec.transitions.slots, stage_B, x)


def child_state(spec: Upscale, coarse: jax.Array, slot: jax.Array, stage_B: jax.Array) -> jax.Array:
  """The level-(s+1) state in `slot` under level-s state `coarse` (-1 where that slot is empty)."""
  tr = spec.transitions
  row = _per_example(tr.child_rows, stage_B, jnp.maximum(coarse, 0))
  children = tr.child_table.reshape(spec.num_stages, -1)  # [S, R * C]
  kid = _per_example(children, stage_B, jnp.maximum(row, 0) * spec.num_slots + slot)
  return jnp.where(row >= 0, kid, -1)


def stage_inputs(spec: Upscale, x: jax.Array, stage_B: jax.Array, known: jax.Array):
  """(x_in, x_coarse, x_fine) for data x at stage s: x_in holds the fine state where known, else the coarse one."""
  x_coarse = states_at(spec, x, stage_B)
  x_fine = states_at(spec, x, stage_B + 1)
  return jnp.where(known, x_fine, x_coarse).astype(jnp.int32), x_coarse, x_fine


def _stage_logits(spec: Upscale, net_out: jax.Array, stage_B: jax.Array) -> jax.Array:
  """Direct parametrisation: this stage's C logits out of the S * C outputs per variable."""
  out = net_out.astype(jnp.float32)
  per_stage = out.reshape(*out.shape[:-1], spec.num_stages, spec.num_slots)
  return jax.vmap(lambda o, s: jnp.take(o, s, axis=-2))(per_stage, stage_B)


def _valid_slots(spec: Upscale, coarse: jax.Array, stage_B: jax.Array) -> jax.Array:
  """bool [..., C]: which slots of each coarse state hold a child."""
  tr = spec.transitions
  row = _per_example(tr.child_rows, stage_B, jnp.maximum(coarse, 0)).reshape(coarse.shape[0], -1)
  table_BxRxC = jnp.asarray(tr.child_table)[stage_B]
  kids = jnp.take_along_axis(table_BxRxC, jnp.maximum(row, 0)[:, :, None], axis=1)  # [B, D, C]
  return ((kids >= 0) & (row >= 0)[:, :, None]).reshape(*coarse.shape, spec.num_slots)


def _range(spec: Upscale, states: jax.Array, level_B: jax.Array):
  tr = spec.transitions
  return _per_example(tr.range_lo, level_B, jnp.maximum(states, 0)), _per_example(
    tr.range_hi, level_B, jnp.maximum(states, 0)
  )


def _member_log_mass(logp: jax.Array, level_row_BxK: jax.Array, states: jax.Array) -> jax.Array:
  """log sum of p(k) over the data values k whose state (per example row) equals `states`; logp [B, ..., K]."""
  row = level_row_BxK.reshape((level_row_BxK.shape[0],) + (1,) * (states.ndim - 1) + (-1,))
  return jax.nn.logsumexp(jnp.where(row == states[..., None], logp, -jnp.inf), axis=-1)


def log_probs_of_data(spec: Upscale, net_out: jax.Array, x: jax.Array, stage_B: jax.Array) -> jax.Array:
  """log p(x^{(s+1)}_i | network inputs) for every variable of data items x [B, ...], flattened to [B, D]."""
  batch = x.shape[0]
  x_coarse = states_at(spec, x, stage_B)
  if spec.parametrisation == "direct":
    logits = _stage_logits(spec, net_out, stage_B)
    logits = jnp.where(_valid_slots(spec, x_coarse, stage_B), logits, -jnp.inf)
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = slot_of(spec, x, stage_B)
    return jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0].reshape(batch, -1)
  dist = spec.distribution
  x_fine = states_at(spec, x, stage_B + 1)
  if spec.transitions.range_lo is not None:
    lo_f, hi_f = _range(spec, x_fine, stage_B + 1)
    lo_c, hi_c = _range(spec, x_coarse, stage_B)
    logp = dist.log_mass(net_out, lo_f, hi_f) - dist.log_mass(net_out, lo_c, hi_c)
  else:
    levels = jnp.asarray(spec.transitions.levels)
    logp_K = dist.log_pmf(net_out)
    logp = _member_log_mass(logp_K, levels[stage_B + 1], x_fine) - _member_log_mass(logp_K, levels[stage_B], x_coarse)
  return logp.reshape(batch, -1)


def slot_log_probs(spec: Upscale, net_out: jax.Array, coarse: jax.Array, stage_B: jax.Array) -> jax.Array:
  """log p(slot | network inputs) [..., C] for variables with level-s states `coarse` [B, ...].

  Empty slots get -inf (probability exactly 0); the rest sums to 1. This is the table to sample from and, for an
  entropy coder, the table to quantise (coding.quantise_counts turns -inf into the minimum count) for the symbol
  slot_of(spec, x, stage).
  """
  if spec.parametrisation == "data" and spec.transitions.slots_are_classes:
    return spec.distribution.log_pmf(net_out)  # one stage below the absorbing state: slots are the classes
  valid = _valid_slots(spec, coarse, stage_B)
  if spec.parametrisation == "direct":
    logits = jnp.where(valid, _stage_logits(spec, net_out, stage_B), -jnp.inf)
    return jax.nn.log_softmax(logits, axis=-1)
  dist = spec.distribution
  kids = [child_state(spec, coarse, jnp.full(coarse.shape, j, jnp.int32), stage_B) for j in range(spec.num_slots)]
  if spec.transitions.range_lo is not None:
    lo_c, hi_c = _range(spec, coarse, stage_B)
    parent = dist.log_mass(net_out, lo_c, hi_c)
    per_slot = [dist.log_mass(net_out, *_range(spec, kid, stage_B + 1)) for kid in kids]
  else:
    levels = jnp.asarray(spec.transitions.levels)
    logp_K = dist.log_pmf(net_out)
    parent = _member_log_mass(logp_K, levels[stage_B], coarse)
    per_slot = [_member_log_mass(logp_K, levels[stage_B + 1], kid) for kid in kids]
  logp = jnp.stack(per_slot, axis=-1) - parent[..., None]
  return jnp.where(valid, logp, -jnp.inf)


# ----------------------------------------------------------------------------------------------- ELBO
def _stage_call(
  apply_fn: ApplyFn,
  params: Any,
  spec: Upscale,
  x: jax.Array,
  stage_B: jax.Array,
  known_BxD: jax.Array,
  t_B: jax.Array,
  train: bool,
  key: jax.Array | None,
) -> jax.Array:
  """One network call at (stage, t) on data x; returns log p(x^{(s+1)}_i | ...) as [B, D]."""
  num_steps = int(np.prod(x.shape[1:]))
  known = known_BxD.reshape(x.shape)
  x_in, _, _ = stage_inputs(spec, x, stage_B, known)
  net_out = apply_fn(params, x_in, known, stage_B * num_steps + t_B, train, key)
  want = x.shape + (spec.num_outputs,)
  if net_out.shape != want:
    raise ValueError(
      f"the network returned {net_out.shape}, the upscale model needs {want}; build the network with "
      f"num_outputs={spec.num_outputs} and num_input_classes={spec.num_input_classes}"
    )
  return log_probs_of_data(spec, net_out, x, stage_B)


def elbo_terms(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  key: jax.Array,
  *,
  spec: Upscale,
  t_sampling: str = "uniform",
  train: bool = False,
) -> dict[str, jax.Array]:
  """Stochastic upscale terms per example: draws a stage, a step and this stage's order; one network call.

  (stage, t) is drawn as one global step uniform on 0..S*D-1 (`ardm.sample_steps`, so 'stratified' spreads the
  batch over stages and steps alike); that makes the stage and the step independent and uniform.
  """
  batch_size = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  key_order, key_t, key_net = jax.random.split(key, 3)
  t_global_B = ardm.sample_steps(key_t, batch_size, spec.num_stages * num_steps, t_sampling)
  sigma_BxD = ardm.sample_orders(key_order, batch_size, num_steps)
  return elbo_terms_given(
    apply_fn, params, x, t_global_B // num_steps, sigma_BxD, t_global_B % num_steps, spec=spec, train=train, key=key_net
  )


def elbo_terms_given(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  stage_B: jax.Array,
  sigma_BxD: jax.Array,
  t_B: jax.Array,
  *,
  spec: Upscale,
  train: bool = False,
  key: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Upscale terms per example for given stages, orders (of that stage) and steps.

  Returns, per example:
    nll: S * (D / (D - t)) * sum_{sigma >= t} -log p(x^{(s+1)}_i | ...) in nats; its expectation over uniform
      stage, t and sigma is the sum over stages of each stage's negative ELBO.
    ce: the unweighted sum (the auxiliary cross-entropy term).
    lt_bits: (1 / (D - t)) * sum -log2 p, the per-step loss of step t of stage s.
    t: the global step s * D + t (what the network sees; index of an [S * D] L_t tracker, i.e. [S, D] row-major).
    stage, t_in_stage: s and t.
  """
  num_steps = int(np.prod(x.shape[1:]))
  known_BxD = ardm.known_mask(sigma_BxD, t_B)
  logp_BxD = _stage_call(apply_fn, params, spec, x, stage_B, known_BxD, t_B, train, key)
  unknown_nll_B = -jnp.sum(jnp.where(known_BxD, 0.0, logp_BxD), axis=-1)
  num_unknown_B = (num_steps - t_B).astype(jnp.float32)
  return {
    "nll": unknown_nll_B * (spec.num_stages * num_steps / num_unknown_B),
    "ce": unknown_nll_B,
    "lt_bits": unknown_nll_B / num_unknown_B / np.log(2.0),
    "t": (stage_B * num_steps + t_B).astype(jnp.int32),
    "stage": stage_B.astype(jnp.int32),
    "t_in_stage": t_B.astype(jnp.int32),
  }


# ----------------------------------------------------------------------------------------------- policies
def sequential_policy(num_stages: int, num_steps: int) -> np.ndarray:
  """One variable per call in every stage: all S * D global steps."""
  return np.arange(num_stages * num_steps, dtype=np.int32)


def flatten_policies(stage_policies: Sequence, num_steps: int) -> np.ndarray:
  """Per-stage policies (each an OA-ARDM policy over D steps, budgets may differ) -> one global policy."""
  if len(stage_policies) == 0:
    raise ValueError("no stage policies given; pass one policy per stage")
  for s, steps in enumerate(stage_policies):
    try:
      policy_lib.check_policy_steps(steps, num_steps)
    except ValueError as e:
      raise ValueError(f"stage {s}: {e}") from None
  return policy_lib.flatten_stage_policies(stage_policies, num_steps).astype(np.int32)


BUDGET_SPLITS = tuple(policy_lib.BUDGET_SPLIT_KEYS)  # ("optimal", "equal")


def policy_for_total_budget(
  stage_losses, total_budget: int, *, split: str = "optimal", monotone: str | None = "sort"
) -> tuple[np.ndarray, list[int], float]:
  """A global policy with `total_budget` network calls in all, from per-stage L_t (bits per variable, [S, D]).

  split='equal' gives every stage total // S calls (the remainder to the first stages), as in the paper;
  'optimal' picks the per-stage budgets that minimise the summed optimal cost (policy.split_budget_across_stages).
  Each stage then gets its optimal policy for its budget. Returns (global policy, stage budgets, expected bits per
  item under the losses the DP optimised).
  """
  losses = [np.asarray(L, np.float64) for L in stage_losses]
  num_stages, num_steps = len(losses), (losses[0].size if losses else 0)
  if num_stages == 0 or any(L.shape != (num_steps,) for L in losses):
    raise ValueError("stage_losses must hold one L_t array of the same length D per stage ([S, D])")
  total_budget = ardm.check_int("total budget", total_budget, num_stages)
  if total_budget > num_stages * num_steps:
    raise ValueError(f"total budget {total_budget} exceeds S * D = {num_stages * num_steps} steps")
  if split == "optimal":
    budgets = policy_lib.split_budget_across_stages(losses, total_budget, monotone)
  elif split == "equal":
    budgets = policy_lib.equal_split(total_budget, num_stages)
  else:
    raise ValueError(f"unknown budget split {split!r}; use one of {BUDGET_SPLITS}")
  steps, cost = [], 0.0
  for L, b in zip(losses, budgets):
    stage_steps, stage_cost = policy_lib.optimal_policies(L, [b], monotone)[b]
    steps.append(stage_steps)
    cost += stage_cost
  return flatten_policies(steps, num_steps), [int(b) for b in budgets], cost


def split_policy(policy, num_steps: int, num_stages: int) -> list[np.ndarray]:
  """The inverse of flatten_policies."""
  steps = validate_policy(policy, num_steps, num_stages).astype(np.int64)
  return [
    (steps[(steps >= s * num_steps) & (steps < (s + 1) * num_steps)] - s * num_steps).astype(np.int32)
    for s in range(num_stages)
  ]


def validate_policy(policy, num_steps: int, num_stages: int) -> np.ndarray:
  """Checks a global policy (host side): from 0, strictly increasing below S * D, every stage start included."""
  return policy_lib.check_global_policy(policy, num_steps, num_stages).astype(np.int32)


def _policy_ends(policy_P: jax.Array, total: int) -> jax.Array:
  return jnp.concatenate([policy_P[1:], jnp.array([total], policy_P.dtype)])


def _stage_orders(sigma_BxSxD: jax.Array, stage_B: jax.Array) -> jax.Array:
  return jnp.take_along_axis(sigma_BxSxD, stage_B[:, None, None], axis=1)[:, 0]


def sample_stage_orders(key: jax.Array, batch_size: int, num_stages: int, num_steps: int) -> jax.Array:
  """Independent uniformly random orders per example and stage, sigma_BxSxD."""
  return ardm.sample_orders(key, batch_size * num_stages, num_steps).reshape(batch_size, num_stages, num_steps)


def policy_elbo_terms(
  apply_fn: ApplyFn, params: Any, x: jax.Array, key: jax.Array, policy_P: jax.Array, *, spec: Upscale
) -> dict[str, jax.Array]:
  """Unbiased one-call estimate of sum_s E_sigma[-log p_policy_s(x^{(s+1)} | x^{(s)}, sigma_s)] per example."""
  batch_size = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  key_order, key_k = jax.random.split(key)
  sigma_BxSxD = sample_stage_orders(key_order, batch_size, spec.num_stages, num_steps)
  k_B = jax.random.randint(key_k, (batch_size,), 0, policy_P.shape[0])
  return policy_terms_given(apply_fn, params, x, sigma_BxSxD, k_B, policy_P, spec=spec)


def policy_terms_given(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  sigma_BxSxD: jax.Array,
  k_B: jax.Array,
  policy_P: jax.Array,
  *,
  spec: Upscale,
) -> dict[str, jax.Array]:
  """P times the nats of global policy step k_B (see policy_elbo_terms); P = total number of policy steps."""
  num_steps = int(np.prod(x.shape[1:]))
  start_g = policy_P[k_B]
  end_g = _policy_ends(policy_P, spec.num_stages * num_steps)[k_B]
  stage_B = start_g // num_steps
  start_B, end_B = start_g - stage_B * num_steps, end_g - stage_B * num_steps
  sigma_BxD = _stage_orders(sigma_BxSxD, stage_B)
  known_BxD = ardm.known_mask(sigma_BxD, start_B)
  current_BxD = (~known_BxD) & (sigma_BxD < end_B[:, None])
  logp_BxD = _stage_call(apply_fn, params, spec, x, stage_B, known_BxD, start_B, False, None)
  nll_B = -policy_P.shape[0] * jnp.sum(jnp.where(current_BxD, logp_BxD, 0.0), axis=-1)
  return {"nll": nll_B, "t": start_g, "stage": stage_B}


def policy_log_likelihood(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  sigma_BxSxD: jax.Array,
  policy_P: jax.Array,
  *,
  spec: Upscale,
  per_stage: bool = False,
) -> jax.Array:
  """Exact log p(x | sigma, policy) in nats per example (sum over all stages), one network call per policy step.

  With `per_stage` the result is [B, S], each stage's own log p(x^{(s+1)} | x^{(s)}, sigma_s, policy) (the order
  bound of `order_bound` averages each stage over its own orders).
  """
  batch_size = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  ends_P = _policy_ends(policy_P, spec.num_stages * num_steps)

  def step(total_B, start_end):
    start_g, end_g = start_end
    stage = start_g // num_steps
    stage_B = jnp.full((batch_size,), stage, jnp.int32)
    start, end = start_g - stage * num_steps, end_g - stage * num_steps
    sigma_BxD = _stage_orders(sigma_BxSxD, stage_B)
    known_BxD = sigma_BxD < start
    current_BxD = (~known_BxD) & (sigma_BxD < end)
    logp_BxD = _stage_call(
      apply_fn, params, spec, x, stage_B, known_BxD, jnp.full((batch_size,), start, jnp.int32), False, None
    )
    step_B = jnp.sum(jnp.where(current_BxD, logp_BxD, 0.0), axis=-1)
    if per_stage:
      return total_B + jnp.where((jnp.arange(spec.num_stages) == stage)[None, :], step_B[:, None], 0.0), None
    return total_B + step_B, None

  init = jnp.zeros((batch_size, spec.num_stages) if per_stage else (batch_size,), jnp.float32)
  total_B, _ = jax.lax.scan(step, init, (policy_P, ends_P))
  return total_B


# ----------------------------------------------------------------------------------------------- sampling
def generate(
  apply_fn: ApplyFn,
  params: Any,
  key: jax.Array,
  x_init: jax.Array,
  sigma_BxSxD: jax.Array,
  policy_P: jax.Array,
  *,
  spec: Upscale,
  observed: jax.Array | None = None,
  return_chain: bool = False,
):
  """Generates stage by stage under a global policy; sequential sampling is sequential_policy(S, D).

  Every call samples a slot for each variable of its step from slot_log_probs and moves the variable to that
  child of its coarse state, so each stage only refines. x_init [B, ...] gives the data values of `observed`
  positions (set to their level-(s+1) state in stage s instead of being sampled; order them first in each stage,
  e.g. with ardm.orders_observed_first, so the model conditions on them); other values are ignored.
  Returns x [B, ...] (data values), and with return_chain also the states after every call, [P, B, ...].
  """
  batch_size = x_init.shape[0]
  num_steps = int(np.prod(x_init.shape[1:]))
  ends_P = _policy_ends(policy_P, spec.num_stages * num_steps)
  keep = jnp.zeros(x_init.shape, bool) if observed is None else observed.reshape(x_init.shape)

  def step(x, inputs):
    k, start_g, end_g = inputs
    stage = start_g // num_steps
    stage_B = jnp.full((batch_size,), stage, jnp.int32)
    start, end = start_g - stage * num_steps, end_g - stage * num_steps
    sigma = _stage_orders(sigma_BxSxD, stage_B).reshape(x.shape)
    known = sigma < start
    # Observed variables come first in each stage's order: those already "generated" at this step take their
    # level-(s+1) state without a network call, so a completion policy may start each stage after them.
    x = jnp.where(keep & known, states_at(spec, x_init, stage_B + 1), x)
    net_out = apply_fn(params, x, known, jnp.full((batch_size,), start_g, jnp.int32), False, None)
    # Known positions already hold level-(s+1) states; their parents give every position a valid coarse state.
    coarse = jnp.where(known, parents_of(spec, x, stage_B), x)
    key_k = jax.random.fold_in(key, k)
    if spec.parametrisation == "data" and spec.transitions.slots_are_classes:
      slot = spec.distribution.sample(key_k, net_out)  # no [..., K] table: K may be 65,536
    else:
      slot = jax.random.categorical(key_k, slot_log_probs(spec, net_out, coarse, stage_B), axis=-1)
    slot = slot.astype(jnp.int32)
    new = jnp.where(keep, states_at(spec, x_init, stage_B + 1), child_state(spec, coarse, slot, stage_B))
    x = jnp.where((~known) & (sigma < end), new, x).astype(jnp.int32)
    return x, (x if return_chain else None)

  x0 = jnp.full(x_init.shape, spec.transitions.absorbing_state, jnp.int32)
  idx_P = jnp.arange(policy_P.shape[0])
  x, chain = jax.lax.scan(step, x0, (idx_P, policy_P, ends_P))
  return (x, chain) if return_chain else x
