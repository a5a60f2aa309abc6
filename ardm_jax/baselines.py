"""The paper's two baselines, a single-order ARM and D3PM-absorbing, as objectives of the one trainer.

They exist to be compared with the OA-ARDM on equal terms: same data, network, trainer and evaluation. So each
model is a small static dataclass answering what the trainer asks of an `upscale_spec.Upscale` (input classes,
outputs per variable, one stage, the range of the network's step input), and each objective takes the network
as the plain `apply_fn(params, x_in, known, t, train, key)` of `ardm.py` and returns the per-example terms of
`upscale.elbo_terms` (`nll`, `ce` in nats; `lt_bits`, `t` for the per-step tracker). `objective.py` picks the
model from `config.ardm.objective` and dispatches the training terms on its type, so `train.py` serves the
baselines unchanged; evaluation and sampling call `d3pm_terms_every_step`, `arm_generate` and `d3pm_generate`.

Single-order ARM: raster order for images, left to right for text. Its network must be causal
(`model.name='transformer'`, `model.causal=True`): it reads x shifted right by one, with the absorbing id K as
start token, and its output at position i is p(x_i | x_<i). One call gives all D conditionals, so the NLL is
exact (not a bound); generation takes D calls.

D3PM-absorbing (Austin et al., 2021), T discrete steps: q(x_t | x_0) masks each variable independently with
probability t / T (beta_t = 1 / (T - t + 1)), so x_T is all masked. With the x_0 parametrisation the reverse
step unmasks each masked variable with probability 1 / t, drawing it from the network's p(x_0^i | x_t), and the
ELBO's KL terms reduce to

    -ELBO = sum_{t=1..T} E_{x_t ~ q(x_t | x_0)} [ (1 / t) * sum_{i masked in x_t} -log p(x_0^i | x_t) ]

(`tests/test_baselines.py` checks this against the definition by enumerating every forward trajectory). The
network's inputs are an OA-ARDM's: x_t with masked variables set to K, the known-mask, and as step input the
expected number of known variables floor(D * (T - t) / T) in 0..D-1. That scale is the same whatever T, so one
trained denoiser defines a T'-step model for any T' (`D3PMAbsorbing.with_steps`): the generation budget of the
comparison.
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
  """What the trainer asks of a model, for a baseline: one stage, K outputs per variable, K + 1 input ids.

  Static: close over it (or pass it as a static argument), never trace it.

  Attributes:
    num_classes: K, the data classes; K is also the absorbing / start input id.
    num_stages: 1 (a class constant; upscale ARDMs have more).

  Raises:
    ValueError: if num_classes is not an integer >= 2.
  """

  num_classes: int

  num_stages = 1

  def __post_init__(self):
    ardm.check_int("num_classes", self.num_classes, 2)

  @property
  def num_input_classes(self) -> int:
    """K + 1: the data values and the absorbing / start id K (size the input embedding for this many)."""
    return self.num_classes + 1

  @property
  def num_outputs(self) -> int:
    """K: the network's categorical logits per variable."""
    return self.num_classes

  def num_net_steps(self, num_steps: int) -> int:
    """The range of the network's step input and the per-step tracker's length.

    Args:
      num_steps: D, the variables per item.

    Returns:
      D: the ARM tracks one entry per position, D3PM-absorbing its step inputs 0..D-1.
    """
    return int(num_steps)


@dataclasses.dataclass(frozen=True)
class ARM(_OneStageBaseline):
  """Single-order autoregressive model in raster order (left to right for text).

  The network's step input is always 0; the per-step tracker holds one entry per position instead (`arm_terms`
  reports position i as its `t`). The start token is the extra input id K.

  Attributes:
    num_classes: K, the data classes.
    name: 'arm', the `config.ardm.objective` value that selects this model.
  """

  name: str = "arm"

  def generation_calls(self, num_steps: int) -> int:
    """Network calls to generate one batch.

    Args:
      num_steps: D, the variables per item.

    Returns:
      D: one call per variable.
    """
    return int(num_steps)


def arm_inputs(x: jax.Array, start_token: int) -> jax.Array:
  """The causal network's input: x shifted right by one in raster order, the start token first.

  Args:
    x: int [B, *data_shape] data values.
    start_token: the id at the first position (the ARM uses K).

  Returns:
    int32 [B, *data_shape] whose raster position i holds x_{i-1} (position 0 the start token).
  """
  x_BxD = x.reshape(x.shape[0], -1)
  shifted = jnp.concatenate([jnp.full((x.shape[0], 1), start_token, x_BxD.dtype), x_BxD[:, :-1]], axis=1)
  return shifted.reshape(x.shape).astype(jnp.int32)


def arm_log_probs(
  apply_fn: ApplyFn, params: Any, x: jax.Array, model: ARM, train: bool = False, key: jax.Array | None = None
) -> jax.Array:
  """log p(x_i | x_<i) for every position, from one call of the causal network.

  Args:
    apply_fn: the causal network, `apply_fn(params, x_in, known, t, train, key) -> logits [B, *data_shape, K]`;
      it sees every position as known and step 0.
    params: its parameters.
    x: int [B, *data_shape] data values in 0..K-1.
    model: the ARM (its K is the start token).
    train: passed to the network (dropout).
    key: dropout key, or None.

  Returns:
    float32 [B, D] log-probabilities in nats, D = prod(data_shape), raster order.
  """
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
  """The ARM's training and evaluation terms: the exact NLL per example and per-position losses.

  Args:
    apply_fn: the causal network (see `arm_log_probs`).
    params: its parameters.
    x: int [B, *data_shape] data values.
    key: dropout key (the ARM draws nothing else).
    model: the ARM.
    train: passed to the network.
    t_sampling: unused; accepted so every objective has the same keyword arguments.

  Returns:
    A dict:
      nll: float32 [B], -log p(x) in nats, exact.
      ce: float32 [B], the same (there is no weighting to leave out).
      lt_bits: float32 [B, D], -log2 p(x_i | x_<i) per position.
      t: int32 [B, D], the position i, the tracker's index for lt_bits.
  """
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
  """Ancestral sampling in raster order, one network call per variable.

  There is no key/value cache: each of the D calls reads the whole partially generated item.

  Args:
    apply_fn: the causal network (see `arm_log_probs`), called with train=False.
    params: its parameters.
    key: PRNG key; variable i uses fold_in(key, i).
    batch_size: B.
    shape: the item shape, data_shape.
    model: the ARM.

  Returns:
    int32 [B, *shape] samples in 0..K-1.
  """
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
  """Discrete-time absorbing diffusion with T steps, the x_0 parametrisation (module docstring).

  The absorbing state is the extra input id K; the network's step input at diffusion time t is the expected
  number of known variables, floor(D * (T - t) / T) in 0..D-1, as for an OA-ARDM (`d3pm_net_step`).

  Attributes:
    num_classes: K, the data classes.
    num_diffusion_steps: T >= 1, the diffusion steps of training and, by default, of generation.
    name: 'd3pm_absorbing', the `config.ardm.objective` value that selects this model.

  Raises:
    ValueError: if num_classes < 2 or T < 1 (or either is not an integer).
  """

  num_diffusion_steps: int = 1000
  name: str = "d3pm_absorbing"

  def __post_init__(self):
    super().__post_init__()
    ardm.check_int("number of diffusion steps T", self.num_diffusion_steps, 1)

  def generation_calls(self, num_steps: int) -> int:
    """Network calls to generate one batch.

    Args:
      num_steps: D (unused).

    Returns:
      T: one call per diffusion step, whatever D.
    """
    del num_steps
    return self.num_diffusion_steps

  def with_steps(self, num_diffusion_steps: int) -> D3PMAbsorbing:
    """The same denoiser as a model with another number of diffusion steps.

    Args:
      num_diffusion_steps: T', the new number of steps (for generation or evaluation at another budget).

    Returns:
      A copy with T = T'; the network and its parameters serve it unchanged.
    """
    return dataclasses.replace(self, num_diffusion_steps=num_diffusion_steps)


def d3pm_net_step(t_B: jax.Array, num_diffusion_steps: int, num_steps: int) -> jax.Array:
  """The network's step input at diffusion time t: the expected number of known variables.

  Args:
    t_B: int [B] diffusion times in 1..T.
    num_diffusion_steps: T.
    num_steps: D, the variables per item.

  Returns:
    int32 [B], floor(D * (T - t) / T), in 0..D-1.
  """
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
  """D3PM-absorbing terms for given diffusion times and masks: one network call.

  Args:
    apply_fn: the network, `apply_fn(params, x_in, known, t, train, key) -> logits [B, *data_shape, K]`.
    params: its parameters.
    x: int [B, *data_shape] data values x_0.
    t_B: int [B] diffusion times in 1..T.
    masked_BxD: bool [B, D], the variables masked in x_t (a draw from q(x_t | x_0) for an unbiased estimate).
    model: the D3PM-absorbing model (its T).
    train: passed to the network.
    key: dropout key, or None.

  Returns:
    A dict of [B] arrays:
      nll: float32, T * (1 / t) * sum_{i masked} -log p(x_0^i | x_t) in nats; its expectation over t ~ U{1..T}
        and the mask is the negative ELBO of the T-step model.
      ce: float32, the unweighted sum over masked variables (the auxiliary cross-entropy term).
      lt_bits: float32, the per-token loss in bits, that sum over the number masked.
      lt_weight: float32, 1, or 0 when nothing is masked (the tracker then ignores the entry).
      t: int32, the network's step input (`d3pm_net_step`), the tracker's index.
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
  """Stochastic negative-ELBO terms: draws t and the mask, then one network call.

  Args:
    apply_fn: the network (see `d3pm_terms_given`).
    params: its parameters.
    x: int [B, *data_shape] data values.
    key: PRNG key for t, the mask and dropout.
    model: the D3PM-absorbing model.
    t_sampling: 'uniform' draws t ~ U{1..T} per example; 'stratified' spreads the batch evenly over 1..T
      (`ardm.sample_steps`). Each variable is then masked independently with probability t / T.
    train: passed to the network.

  Returns:
    The dict of `d3pm_terms_given`, each entry [B].

  Raises:
    ValueError: for an unknown t_sampling.
  """
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
  """The negative ELBO summed over every diffusion step: T network calls, no variance from drawing t.

  Its expectation equals that of `d3pm_terms`; evaluation uses it as the exact counterpart of an ARDM's exact
  policy likelihood, which also takes one call per policy step, so the two compare at equal calls.

  Args:
    apply_fn: the network (see `d3pm_terms_given`), called with train=False.
    params: its parameters.
    x: int [B, *data_shape] data values.
    key: PRNG key; the mask at step t uses fold_in(key, t).
    model: the D3PM-absorbing model (its T).

  Returns:
    float32 [B], -ELBO in nats: sum over t = 1..T of (1 / t) * sum_{i masked} -log p(x_0^i | x_t), one mask
    draw per t.
  """
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
  """Ancestral sampling with T network calls, starting from the all-masked x_T.

  At t = T, ..., 1 each masked variable is unmasked with probability 1 / t (all that remain at t = 1) and its
  value drawn from the network's p(x_0^i | x_t).

  Args:
    apply_fn: the network (see `d3pm_terms_given`), called with train=False.
    params: its parameters.
    key: PRNG key; call k (t = T - k) uses fold_in(key, k).
    batch_size: B.
    shape: the item shape, data_shape.
    model: the D3PM-absorbing model (T = its number of calls; see `with_steps`).

  Returns:
    int32 [B, *shape] samples in 0..K-1.
  """
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
