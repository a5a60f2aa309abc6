"""The paper's baselines as objectives of the one trainer: a single-order ARM and D3PM-absorbing (pure math).

Both take the network as the plain `apply_fn(params, x_in, known, t, train, key)` of `ardm.py` and return the
same per-example terms as `upscale.elbo_terms` (nats; `lt_bits`/`t` feed the trainer's per-step tracker), so
`train.py`, `evaluate.py` and the configs serve them unchanged (`config.ardm.objective`, see `objective.py`).

ARM (single fixed order): raster order for images, left to right for text. The network must be causal
(`model.name='transformer'`, `model.causal=True`): it reads x shifted right by one (a start token, the
absorbing id K, in front) and its output at position i is p(x_i | x_<i). All D conditionals come from one call,
so the NLL is exact per item (no stochastic bound); generation takes D calls.

D3PM-absorbing (Austin et al., 2021) with T discrete steps: q(x_t | x_0) masks every variable independently with
probability t / T (the absorbing schedule beta_t = 1 / (T - t + 1)); x_T is all masked. With the x_0
parametrisation the reverse step unmasks a masked variable with probability 1 / t, drawing it from the network's
p(x_0^i | x_t), and the KL terms of the ELBO reduce to

    -ELBO = sum_{t=1..T} E_{x_t ~ q(x_t | x_0)} [ (1 / t) * sum_{i masked in x_t} -log p(x_0^i | x_t) ]

(`tests/test_baselines.py` checks this against the definition by enumerating every forward trajectory). The
network sees the same inputs as an OA-ARDM's: x_t with masked variables set to K, the known-mask, and as its step
input the expected number of known variables floor(D * (T - t) / T) on the OA-ARDM's 0..D-1 scale, so one
trained denoiser defines a T'-step model for any T' (`with_steps`): the generation budget of the comparison.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import ardm

ApplyFn = ardm.ApplyFn


@dataclasses.dataclass(frozen=True)
class _OneStageBaseline:
  """What the trainer asks of a model: K data classes, the absorbing/start id K as an extra input class, K
  outputs per variable, one stage, and the network's step input ranging over 0..D-1 (the per-step tracker's
  size). Static: close over it, never trace it."""

  num_classes: int

  num_stages = 1

  def __post_init__(self):
    ardm.check_int("num_classes", self.num_classes, 2)

  @property
  def num_input_classes(self) -> int:
    return self.num_classes + 1

  @property
  def num_outputs(self) -> int:
    return self.num_classes

  def num_net_steps(self, num_steps: int) -> int:
    return int(num_steps)


@dataclasses.dataclass(frozen=True)
class ARM(_OneStageBaseline):
  """Single-order autoregressive model over the raster order; its tracker holds one entry per position (the
  network's step input is always 0) and the start token is the extra input class K."""

  name: str = "arm"

  def generation_calls(self, num_steps: int) -> int:
    return int(num_steps)


def arm_inputs(x: jax.Array, start_token: int) -> jax.Array:
  """x shifted right by one in raster order with the start token first: position i holds x_{i-1}."""
  x_BxD = x.reshape(x.shape[0], -1)
  shifted = jnp.concatenate([jnp.full((x.shape[0], 1), start_token, x_BxD.dtype), x_BxD[:, :-1]], axis=1)
  return shifted.reshape(x.shape).astype(jnp.int32)


def arm_log_probs(
  apply_fn: ApplyFn, params: Any, x: jax.Array, model: ARM, train: bool = False, key: jax.Array | None = None
) -> jax.Array:
  """log p(x_i | x_<i) for every position, [B, D], from one call of the causal network."""
  batch = x.shape[0]
  known = jnp.ones(x.shape, bool)
  logits = apply_fn(params, arm_inputs(x, model.num_classes), known, jnp.zeros((batch,), jnp.int32), train, key)
  return ardm.log_probs_of_data(logits, x)


def arm_terms(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  key: jax.Array,
  *,
  model: ARM,
  train: bool = False,
  t_sampling: str | None = None,
) -> dict[str, jax.Array]:
  """Exact NLL per example (nats) and the per-position losses for the tracker; `t_sampling` is unused."""
  del t_sampling
  logp_BxD = arm_log_probs(apply_fn, params, x, model, train, key)
  nll_B = -jnp.sum(logp_BxD, axis=-1)
  num_steps = logp_BxD.shape[1]
  return {
    "nll": nll_B,
    "ce": nll_B,
    "lt_bits": -logp_BxD / np.log(2.0),
    "t": jnp.broadcast_to(jnp.arange(num_steps, dtype=jnp.int32), logp_BxD.shape),
  }


def arm_generate(
  apply_fn: ApplyFn, params: Any, key: jax.Array, batch_size: int, shape: tuple[int, ...], *, model: ARM
) -> jax.Array:
  """Samples [B, *shape] in raster order, one network call per variable (no cache: each call rereads all)."""
  num_steps = int(np.prod(shape))
  known = jnp.ones((batch_size,) + tuple(shape), bool)
  t = jnp.zeros((batch_size,), jnp.int32)

  def step(i, x_BxD):
    x = x_BxD.reshape((batch_size,) + tuple(shape))
    logits = apply_fn(params, arm_inputs(x, model.num_classes), known, t, False, None)
    logits_i = jax.lax.dynamic_index_in_dim(logits.reshape(batch_size, num_steps, -1), i, axis=1, keepdims=False)
    value = jax.random.categorical(jax.random.fold_in(key, i), logits_i.astype(jnp.float32), axis=-1)
    return jax.lax.dynamic_update_index_in_dim(x_BxD, value.astype(jnp.int32), i, axis=1)

  x_BxD = jax.lax.fori_loop(0, num_steps, step, jnp.zeros((batch_size, num_steps), jnp.int32))
  return x_BxD.reshape((batch_size,) + tuple(shape))


@dataclasses.dataclass(frozen=True)
class D3PMAbsorbing(_OneStageBaseline):
  """Discrete-time absorbing diffusion with T steps (the absorbing state is the extra class K); the network's step
  input is the expected number of known variables, 0..D-1, as for an OA-ARDM."""

  num_diffusion_steps: int = 1000
  name: str = "d3pm_absorbing"

  def __post_init__(self):
    super().__post_init__()
    ardm.check_int("number of diffusion steps T", self.num_diffusion_steps, 1)

  def generation_calls(self, num_steps: int) -> int:
    del num_steps
    return self.num_diffusion_steps

  def with_steps(self, num_diffusion_steps: int) -> D3PMAbsorbing:
    """The same denoiser as a model with another number of generation steps T'."""
    return dataclasses.replace(self, num_diffusion_steps=num_diffusion_steps)


def d3pm_net_step(t_B: jax.Array, num_diffusion_steps: int, num_steps: int) -> jax.Array:
  """The network's step input at diffusion time t (1..T): floor(D * (T - t) / T), in 0..D-1."""
  return ((num_steps * (num_diffusion_steps - t_B)) // num_diffusion_steps).astype(jnp.int32)


def d3pm_terms_given(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  t_B: jax.Array,
  masked_BxD: jax.Array,
  *,
  model: D3PMAbsorbing,
  train: bool = False,
  key: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Per example for given diffusion times t (1..T) and masks drawn from q(x_t | x_0):

  nll: T * (1 / t) * sum_{masked} -log p(x_0^i | x_t) in nats, whose expectation over t ~ U{1..T} and the mask is
    the negative ELBO of the T-step model;
  ce: the unweighted sum over masked variables (the auxiliary cross-entropy term);
  lt_bits / lt_weight / t: the per-token loss in bits at the network's step input t (weight 0 when nothing is
    masked), for the trainer's tracker.
  """
  num_steps = masked_BxD.shape[1]
  T = model.num_diffusion_steps
  known_BxD = ~masked_BxD
  known = known_BxD.reshape(x.shape)
  t_net_B = d3pm_net_step(t_B, T, num_steps)
  logits = apply_fn(params, ardm.corrupt(x, known, model.num_classes), known, t_net_B, train, key)
  logp_BxD = ardm.log_probs_of_data(logits, x)
  masked_nll_B = -jnp.sum(jnp.where(masked_BxD, logp_BxD, 0.0), axis=-1)
  num_masked_B = jnp.sum(masked_BxD, axis=-1).astype(jnp.float32)
  return {
    "nll": masked_nll_B * (T / t_B.astype(jnp.float32)),
    "ce": masked_nll_B,
    "lt_bits": masked_nll_B / jnp.maximum(num_masked_B, 1.0) / np.log(2.0),
    "lt_weight": (num_masked_B > 0).astype(jnp.float32),
    "t": t_net_B,
  }


def d3pm_terms(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  key: jax.Array,
  *,
  model: D3PMAbsorbing,
  t_sampling: str = "uniform",
  train: bool = False,
) -> dict[str, jax.Array]:
  """Stochastic negative-ELBO terms: t ~ U{1..T} per example ('stratified' spreads the batch over t), then each
  variable masked independently with probability t / T; one network call."""
  batch = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  key_t, key_mask, key_net = jax.random.split(key, 3)
  t_B = ardm.sample_steps(key_t, batch, model.num_diffusion_steps, t_sampling) + 1
  u_BxD = jax.random.uniform(key_mask, (batch, num_steps))
  masked_BxD = u_BxD < (t_B.astype(jnp.float32) / model.num_diffusion_steps)[:, None]
  return d3pm_terms_given(apply_fn, params, x, t_B, masked_BxD, model=model, train=train, key=key_net)


def d3pm_terms_every_step(
  apply_fn: ApplyFn, params: Any, x: jax.Array, key: jax.Array, *, model: D3PMAbsorbing
) -> jax.Array:
  """-ELBO per example (nats) summed over every t = 1..T with one mask draw per t: T network calls, the same
  expectation as `d3pm_terms` without the variance of drawing t (what an ARDM's exact policy likelihood costs
  for a T-call policy, so the two compare at equal calls)."""
  batch = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  T = model.num_diffusion_steps

  def step(total_B, t):
    u_BxD = jax.random.uniform(jax.random.fold_in(key, t), (batch, num_steps))
    t_B = jnp.full((batch,), t, jnp.int32)
    masked_BxD = u_BxD < t.astype(jnp.float32) / T
    nll_B = d3pm_terms_given(apply_fn, params, x, t_B, masked_BxD, model=model)["nll"]
    return total_B + nll_B / T, None

  total_B, _ = jax.lax.scan(step, jnp.zeros((batch,), jnp.float32), jnp.arange(1, T + 1, dtype=jnp.int32))
  return total_B


def d3pm_generate(
  apply_fn: ApplyFn, params: Any, key: jax.Array, batch_size: int, shape: tuple[int, ...], *, model: D3PMAbsorbing
) -> jax.Array:
  """Ancestral sampling with T calls: at t = T..1 every masked variable is unmasked with probability 1 / t (all of
  them at t = 1) and drawn from the network's p(x_0^i | x_t)."""
  num_steps = int(np.prod(shape))
  T = model.num_diffusion_steps
  full = (batch_size,) + tuple(shape)

  def step(k, carry):
    x, masked = carry
    t = T - k
    t_B = jnp.full((batch_size,), t, jnp.int32)
    logits = apply_fn(params, x, ~masked, d3pm_net_step(t_B, T, num_steps), False, None)
    key_u, key_x = jax.random.split(jax.random.fold_in(key, k))
    unmask = masked & (jax.random.uniform(key_u, full) * t < 1.0)
    value = jax.random.categorical(key_x, logits.astype(jnp.float32), axis=-1).astype(jnp.int32)
    return jnp.where(unmask, value, x), masked & ~unmask

  x0 = jnp.full(full, model.num_classes, jnp.int32)
  x, _ = jax.lax.fori_loop(0, T, step, (x0, jnp.ones(full, bool)))
  return x
