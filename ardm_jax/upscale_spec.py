"""The upscale ARDM's spec and the per-variable conditionals p(level s+1 | level s) it implies (JAX, no network).

`Upscale` bundles the `transitions.Transitions` with a parametrisation and, for 'data', the output distribution.
The functions below map network outputs of stage s to log-probabilities of each variable's next-level state; they
are what the ELBO (`upscale.elbo_terms_given`), the exact likelihood, the sampler and the entropy coder share, so
all four see the same numbers. Two parametrisations of p(level s+1 | level s):

  'data':   the network predicts a distribution over the K data values (any `distributions` object: a categorical,
            or a discretised logistic mixture for 16-bit audio); the probability of a child is the mass of the data
            values under it, renormalised over the data values under the coarse state. With contiguous preimages
            (the digit transitions) these are range masses: O(M) per variable for an M-component logistic mixture,
            so 16-bit audio never needs a K-sized table.
  'direct': the network predicts S * C logits per variable; stage s uses its own C, masked to the coarse
            state's existing children (K not a power of b leaves some digits without data values).

Stages are per example (`stage_B`, int32 [B]), so one batch may mix stages; every table lookup gathers one row per
example. Data items x are int32 [B, ...] (any data shape, D variables in all); network outputs are [B, ..., O].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax.distributions import Categorical
from ardm_jax.transitions import Transitions

PARAMETRISATIONS = ("data", "direct")


@dataclasses.dataclass(frozen=True, eq=False)
class Upscale:
  """Transitions, parametrisation and (for 'data') the output distribution of an upscale ARDM.

  Static: close over it (or mark it static), never trace it. `single_stage(K)` with 'data' is the plain OA-ARDM
  with any output distribution.

  Attributes:
    transitions: the coarse-to-fine levels and slots.
    parametrisation: 'data' (the network predicts the data distribution, pushed to each level) or 'direct' (the
      network predicts S * C slot logits per variable).
    distribution: for 'data', a `distributions` object over the K data values (None: `Categorical(K)`); must be
      None for 'direct'.

  Raises:
    ValueError: for an unknown parametrisation, a distribution given with 'direct', a distribution whose K
      differs from the transitions', or non-contiguous preimages with a distribution lacking `log_pmf`.
  """

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
    """S, the number of stages."""
    return self.transitions.num_stages

  @property
  def num_classes(self) -> int:
    """K, the number of data values."""
    return self.transitions.num_classes

  @property
  def num_input_classes(self) -> int:
    """N, the rows of the network's input embedding: every state id of every level."""
    return self.transitions.num_states

  @property
  def num_slots(self) -> int:
    """C, the most children of any state."""
    return self.transitions.num_slots

  @property
  def num_outputs(self) -> int:
    """Network outputs per variable: S * C for 'direct', the distribution's `num_outputs` for 'data'."""
    if self.parametrisation == "direct":
      return self.num_stages * self.num_slots
    return self.distribution.num_outputs

  def num_net_steps(self, num_steps: int) -> int:
    """S * D, the range of the network's step input t_net = s * D + t (size its time embedding for this many)."""
    return self.num_stages * int(num_steps)


def _per_example(table: np.ndarray, row_B: jax.Array, idx: jax.Array) -> jax.Array:
  """`table[row_B[b], idx[b, ...]]` for a [R, M] table: one gathered row per example, shaped like idx."""
  rows_BxM = jnp.asarray(table)[row_B]
  flat = jnp.take_along_axis(rows_BxM, idx.reshape(idx.shape[0], -1).astype(jnp.int32), axis=1)
  return flat.reshape(idx.shape)


def states_at(spec: Upscale, x: jax.Array, level_B: jax.Array) -> jax.Array:
  """The states of data items at a per-example level.

  Args:
    spec: the model.
    x: int [B, ...] data values.
    level_B: int32 [B], the level (0..S) per example.

  Returns:
    int32 [B, ...], the level-`level_B[b]` state of each value of example b.
  """
  return _per_example(spec.transitions.levels, level_B, x)


def parents_of(spec: Upscale, states: jax.Array, stage_B: jax.Array) -> jax.Array:
  """The coarse parents of fine states: one step of the forward (diffusion) map.

  Args:
    spec: the model.
    states: int [B, ...] level-(s+1) states.
    stage_B: int32 [B], s per example.

  Returns:
    int32 [B, ...], the level-s parent of each state; -1 for ids that are not level-(s+1) states.
  """
  return _per_example(spec.transitions.parents, stage_B, states)


def slot_of(spec: Upscale, x: jax.Array, stage_B: jax.Array) -> jax.Array:
  """The slot stage s takes for data items: the symbol an entropy coder codes at that stage.

  Args:
    spec: the model.
    x: int [B, ...] data values.
    stage_B: int32 [B], s per example.

  Returns:
    int32 [B, ...] slots in 0..C-1.
  """
  return _per_example(spec.transitions.slots, stage_B, x)


def child_state(spec: Upscale, coarse: jax.Array, slot: jax.Array, stage_B: jax.Array) -> jax.Array:
  """The child in a slot of a coarse state: one step of the generative process.

  Args:
    spec: the model.
    coarse: int [B, ...] level-s states.
    slot: int [B, ...] slots in 0..C-1.
    stage_B: int32 [B], s per example.

  Returns:
    int32 [B, ...], the level-(s+1) state in `slot` under `coarse`; -1 where that slot is empty or `coarse` is
    not a level-s state.
  """
  tr = spec.transitions
  row = _per_example(tr.child_rows, stage_B, jnp.maximum(coarse, 0))
  children = tr.child_table.reshape(spec.num_stages, -1)  # [S, R * C]
  kid = _per_example(children, stage_B, jnp.maximum(row, 0) * spec.num_slots + slot)
  return jnp.where(row >= 0, kid, -1)


def stage_inputs(spec: Upscale, x: jax.Array, stage_B: jax.Array, known: jax.Array):
  """What the network sees of data items at stage s.

  Args:
    spec: the model.
    x: int [B, ...] data values.
    stage_B: int32 [B], s per example.
    known: bool [B, ...], the variables this stage has already refined (sigma_s < t).

  Returns:
    (x_in, x_coarse, x_fine), each int32 [B, ...]: the level-s and level-(s+1) states, and x_in holding the fine
    state where known and the coarse one elsewhere, so the network never sees the level-(s+1) state of a
    variable it has to predict.
  """
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
  """The log-probability of every variable's level-(s+1) state, the training and likelihood path.

  Args:
    spec: the model.
    net_out: float [B, ..., O] network outputs at stage s (O = `spec.num_outputs`).
    x: int [B, ...] data values.
    stage_B: int32 [B], s per example.

  Returns:
    float32 [B, D], log p(x_i^{(s+1)} | network inputs) for each variable, flattened (D = prod of x.shape[1:]).
    For 'data' it is log of the mass under the fine state minus log of the mass under the coarse state.
  """
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
  """The full table of slot log-probabilities for variables in given coarse states: the sampling and coding path.

  This is the table to sample from and, for an entropy coder, the table to quantise (the coder turns -inf into
  its minimum count) for the symbol `slot_of(spec, x, stage)`. For `single_stage` with 'data' the slots are the
  classes and this is the distribution's own `log_pmf`.

  Args:
    spec: the model.
    net_out: float [B, ..., O] network outputs at stage s.
    coarse: int [B, ...] level-s states.
    stage_B: int32 [B], s per example.

  Returns:
    float32 [B, ..., C]; empty slots are -inf (probability exactly 0) and the rest sums to 1 over the last axis.
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
