"""Order-agnostic ARDM math (Hoogeboom et al., 2022), independent of any network.

This is the plain OA-ARDM written out in full, the reference for reading the method and for tests. The jobs run
the general form in `upscale.py` (the OA-ARDM is its one-stage case, see `objective.py`); a test checks that both
give the same losses, likelihoods and samples for the same key. The helpers here (orders, steps, masks,
`bits_per_dim`, `orders_observed_first`) are shared by both.

The network enters as a plain function

    apply_fn(params, x_in, known, t, train, dropout_key) -> logits  [B, *shape, K]

where `x_in` holds the known values and the absorbing class K at unknown positions, `known` is the boolean
known-mask and `t` the number of known variables per example. One apply function serves every modality.

Conventions (shape suffixes: B batch, D variables, K classes, P policy steps):
  * sigma_BxD[b, i] is the step at which variable i of example b is generated ("rank" of i in the order);
    at step t the known set is {i : sigma[i] < t}.
  * A policy is an increasing int array [s_0 = 0 < s_1 < ... < s_{P-1}] < D; network call k generates every
    variable with sigma in [s_k, s_{k+1}) (s_P = D) independently given the variables with sigma < s_k.
  * Losses are returned in nats per example; `bits_per_dim` is the one place that converts to bits/dim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[..., jax.Array]
T_SAMPLING_MODES = ("uniform", "stratified")


def check_int(name: str, v, low: int) -> int:
  """Checks a configuration integer.

  Args:
    name: what v is, for the message.
    v: the value.
    low: the smallest allowed value.

  Returns:
    v as an int.

  Raises:
    ValueError: in one line naming `name`, unless v is an integer >= low (bools excluded).
  """
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
  return int(v)


def bits_per_dim(nats: jax.Array | np.ndarray | float, num_dims: int):
  """Converts a per-example negative log-likelihood in nats to bits per data dimension.

  Args:
    nats: NLL per example (any shape).
    num_dims: d, the data dimensions per example (may differ from D).

  Returns:
    nats / (d ln 2), same shape.
  """
  return nats / (num_dims * np.log(2.0))


def sample_orders(key: jax.Array, batch_size: int, num_steps: int) -> jax.Array:
  """Uniformly random orders, one independent random permutation of 0..D-1 per example.

  A uniform random permutation is its own inverse in distribution, so it serves directly as the ranks sigma.
  Ranks of float32 uniforms would tie (at D = 16,000 a tie is likely) and ties would be broken by position.
  Row b's key is fold_in(key, b), so a row's order does not depend on the batch size: a batch padded to divide
  the devices draws the same orders for its real rows.

  Args:
    key: PRNG key.
    batch_size: B.
    num_steps: D.

  Returns:
    int32 [B, D]; row b is a permutation of 0..D-1 (sigma[b, i] = the step that generates variable i).
  """
  keys_B = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch_size, dtype=jnp.uint32))
  return jax.vmap(lambda k: jax.random.permutation(k, num_steps))(keys_B).astype(jnp.int32)


def sample_steps(key: jax.Array, batch_size: int, num_steps: int, mode: str = "uniform") -> jax.Array:
  """Draws t per example, each marginally uniform on {0, ..., D-1}.

  'stratified' (the official code's 'antithetic') spreads the batch evenly over the steps with one shared
  random offset: t_b = floor(D * ((u + b / B) mod 1)). Every t_b is still exactly uniform, so the weighted
  loss stays unbiased per example, but the batch mean has lower variance.

  Args:
    key: PRNG key.
    batch_size: B.
    num_steps: D.
    mode: 'uniform' or 'stratified'.

  Returns:
    int32 [B] steps in 0..D-1.

  Raises:
    ValueError: for an unknown mode.
  """
  if mode == "uniform":
    return jax.random.randint(key, (batch_size,), 0, num_steps, dtype=jnp.int32)
  if mode == "stratified":
    u = jax.random.uniform(key, ())
    frac_B = jnp.mod(u + jnp.arange(batch_size) / batch_size, 1.0)
    return jnp.minimum(jnp.floor(frac_B * num_steps), num_steps - 1).astype(jnp.int32)
  raise ValueError(f"unknown t sampling mode {mode!r}; use one of {T_SAMPLING_MODES}")


def known_mask(sigma_BxD: jax.Array, t_B: jax.Array) -> jax.Array:
  """The variables already generated before step t.

  Args:
    sigma_BxD: int [B, D] orders.
    t_B: int [B] steps.

  Returns:
    bool [B, D], sigma < t.
  """
  return sigma_BxD < t_B[:, None]


def corrupt(x: jax.Array, known: jax.Array, absorbing: int) -> jax.Array:
  """Replaces unknown values by the absorbing class, so the network cannot see them.

  Args:
    x: int [B, ...] data values.
    known: bool [B, ...].
    absorbing: the absorbing class (K for the plain OA-ARDM).

  Returns:
    int32 [B, ...].
  """
  return jnp.where(known, x, absorbing).astype(jnp.int32)


def log_probs_of_data(logits: jax.Array, x: jax.Array) -> jax.Array:
  """The log-probability of every variable's value under categorical logits.

  Args:
    logits: float [B, ..., K].
    x: int [B, ...] data values.

  Returns:
    float32 [B, D], log p(x_i | .) flattened.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  logp_x = jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return logp_x.reshape(x.shape[0], -1)


def network_log_probs(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  known_BxD: jax.Array,
  t_B: jax.Array,
  num_classes: int,
  train: bool = False,
  key: jax.Array | None = None,
):
  """One network call on the partially known x.

  Args:
    apply_fn: the network, `apply_fn(params, x_in, known, t, train, key) -> logits [B, ..., K]`.
    params: its parameters.
    x: int [B, ...] data values (unknown ones are hidden before the call).
    known_BxD: bool [B, D].
    t_B: int [B], the network's step input.
    num_classes: K (also the absorbing class).
    train: passed to the network.
    key: dropout key, or None.

  Returns:
    (logits [B, ..., K], float32 [B, D] log p(x_i | x_known)).
  """
  known = known_BxD.reshape(x.shape)
  logits = apply_fn(params, corrupt(x, known, num_classes), known, t_B, train, key)
  return logits, log_probs_of_data(logits, x)


def elbo_terms(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  key: jax.Array,
  *,
  num_classes: int,
  t_sampling: str = "uniform",
  train: bool = False,
) -> dict[str, jax.Array]:
  """Stochastic OA-ARDM terms per example: draws sigma and t, then one network call for the whole batch.

  Args:
    apply_fn: the network (see `network_log_probs`).
    params: its parameters.
    x: int [B, ...] data values.
    key: PRNG key for the order, the step and dropout.
    num_classes: K.
    t_sampling: 'uniform' or 'stratified' (see `sample_steps`).
    train: passed to the network.

  Returns:
    The dict of `elbo_terms_given`.
  """
  batch_size = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  key_order, key_t, key_net = jax.random.split(key, 3)
  sigma_BxD = sample_orders(key_order, batch_size, num_steps)
  t_B = sample_steps(key_t, batch_size, num_steps, t_sampling)
  return elbo_terms_given(apply_fn, params, x, sigma_BxD, t_B, num_classes=num_classes, train=train, key=key_net)


def elbo_terms_given(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  sigma_BxD: jax.Array,
  t_B: jax.Array,
  *,
  num_classes: int,
  train: bool = False,
  key: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """OA-ARDM terms per example for given orders and steps.

  Args:
    apply_fn: the network (see `network_log_probs`).
    params: its parameters.
    x: int [B, ...] data values.
    sigma_BxD: int [B, D] orders.
    t_B: int [B] steps in 0..D-1.
    num_classes: K.
    train: passed to the network.
    key: dropout key, or None.

  Returns:
    A dict of [B] arrays:
      nll: -(D / (D - t)) * sum_{sigma >= t} log p(x_i | x_{sigma < t}) in nats; its expectation over uniform t
        and sigma is the negative ELBO of the order-agnostic model (an upper bound on -log p(x)).
      ce: the same sum without the D / (D - t) weight (the official code's auxiliary cross-entropy term).
      lt_bits: the per-step loss (1 / (D - t)) * sum -log2 p, the quantity averaged into L_t.
      t: the step.
  """
  num_steps = int(np.prod(x.shape[1:]))
  known_BxD = known_mask(sigma_BxD, t_B)
  _, logp_BxD = network_log_probs(apply_fn, params, x, known_BxD, t_B, num_classes, train, key)
  unknown_nll_B = -jnp.sum(jnp.where(known_BxD, 0.0, logp_BxD), axis=-1)
  num_unknown_B = (num_steps - t_B).astype(jnp.float32)
  return {
    "nll": unknown_nll_B * (num_steps / num_unknown_B),
    "ce": unknown_nll_B,
    "lt_bits": unknown_nll_B / num_unknown_B / np.log(2.0),
    "t": t_B,
  }


def _segment_ends(policy_P: jax.Array, num_steps: int) -> jax.Array:
  """[P] ends s_{k+1} of the policy's segments (s_P = D)."""
  return jnp.concatenate([policy_P[1:], jnp.array([num_steps], policy_P.dtype)])


def policy_elbo_terms(
  apply_fn: ApplyFn, params: Any, x: jax.Array, key: jax.Array, policy_P: jax.Array, *, num_classes: int
) -> dict[str, jax.Array]:
  """Unbiased one-call estimate of E_sigma[-log p_policy(x | sigma)] in nats per example.

  Draws sigma and one policy step k uniformly per example: P * sum_{sigma in [s_k, s_{k+1})} -log p(x_i |
  x_{sigma < s_k}) has expectation sum_k E_sigma[...] = E_sigma[-log p_policy(x | sigma)].

  Args:
    apply_fn: the network (see `network_log_probs`).
    params: its parameters.
    x: int [B, ...] data values.
    key: PRNG key.
    policy_P: int [P] policy.
    num_classes: K.

  Returns:
    The dict of `policy_terms_given`.
  """
  batch_size = x.shape[0]
  num_steps = int(np.prod(x.shape[1:]))
  key_order, key_k = jax.random.split(key)
  sigma_BxD = sample_orders(key_order, batch_size, num_steps)
  k_B = jax.random.randint(key_k, (batch_size,), 0, policy_P.shape[0])
  return policy_terms_given(apply_fn, params, x, sigma_BxD, k_B, policy_P, num_classes=num_classes)


def policy_terms_given(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  sigma_BxD: jax.Array,
  k_B: jax.Array,
  policy_P: jax.Array,
  *,
  num_classes: int,
) -> dict[str, jax.Array]:
  """P times the nats of one policy step per example under order sigma (see `policy_elbo_terms`).

  Args:
    apply_fn: the network (see `network_log_probs`).
    params: its parameters.
    x: int [B, ...] data values.
    sigma_BxD: int [B, D] orders.
    k_B: int [B], the policy step per example.
    policy_P: int [P] policy.
    num_classes: K.

  Returns:
    A dict of [B] arrays: nll (nats) and t (the step's start s_k).
  """
  num_steps = int(np.prod(x.shape[1:]))
  start_B = policy_P[k_B]
  end_B = _segment_ends(policy_P, num_steps)[k_B]
  known_BxD = known_mask(sigma_BxD, start_B)
  current_BxD = (~known_BxD) & (sigma_BxD < end_B[:, None])
  _, logp_BxD = network_log_probs(apply_fn, params, x, known_BxD, start_B, num_classes)
  return {"nll": -policy_P.shape[0] * jnp.sum(jnp.where(current_BxD, logp_BxD, 0.0), axis=-1), "t": start_B}


def policy_log_likelihood(
  apply_fn: ApplyFn, params: Any, x: jax.Array, sigma_BxD: jax.Array, policy_P: jax.Array, *, num_classes: int
) -> jax.Array:
  """Exact log p(x | sigma, policy) in nats per example, with one network call per policy step.

  Args:
    apply_fn: the network (see `network_log_probs`).
    params: its parameters.
    x: int [B, ...] data values.
    sigma_BxD: int [B, D] orders.
    policy_P: int [P] policy.
    num_classes: K.

  Returns:
    float32 [B].
  """
  num_steps = int(np.prod(x.shape[1:]))
  ends_P = _segment_ends(policy_P, num_steps)
  t_shape = (x.shape[0],)

  def step(total_B, start_end):
    start, end = start_end
    known_BxD = sigma_BxD < start
    current_BxD = (~known_BxD) & (sigma_BxD < end)
    _, logp_BxD = network_log_probs(apply_fn, params, x, known_BxD, jnp.full(t_shape, start, jnp.int32), num_classes)
    return total_B + jnp.sum(jnp.where(current_BxD, logp_BxD, 0.0), axis=-1), None

  total_B, _ = jax.lax.scan(step, jnp.zeros(t_shape, jnp.float32), (policy_P, ends_P))
  return total_B


def generate(
  apply_fn: ApplyFn,
  params: Any,
  key: jax.Array,
  x_init: jax.Array,
  sigma_BxD: jax.Array,
  policy_P: jax.Array,
  *,
  num_classes: int,
  observed: jax.Array | None = None,
) -> jax.Array:
  """Generates under a policy: call k samples all variables with sigma in [s_k, s_{k+1}) at once.

  x_init holds the values of variables that are already known (sigma < policy[0]) and of `observed`
  positions, which are never overwritten. Sequential sampling is the policy arange(D). Sampling uses
  jax.random.categorical in float32 (Gumbel-argmax): classes below ~1e-8 are effectively never drawn.

  Args:
    apply_fn: the network (see `network_log_probs`).
    params: its parameters.
    key: PRNG key; call k uses `fold_in(key, k)`.
    x_init: int [B, ...] initial values (K where unknown).
    sigma_BxD: int [B, D] orders.
    policy_P: int [P] policy.
    num_classes: K.
    observed: bool [B, ...] or None; positions kept from x_init.

  Returns:
    int32 [B, ...] samples.
  """
  batch_size = x_init.shape[0]
  num_steps = int(np.prod(x_init.shape[1:]))
  ends_P = _segment_ends(policy_P, num_steps)
  keep_BxD = jnp.zeros((batch_size, num_steps), bool) if observed is None else observed.reshape(batch_size, num_steps)

  def step(x, inputs):
    k, start, end = inputs
    known_BxD = sigma_BxD < start
    known = known_BxD.reshape(x.shape)
    logits = apply_fn(
      params, corrupt(x, known, num_classes), known, jnp.full((batch_size,), start, jnp.int32), False, None
    )
    drawn = jax.random.categorical(jax.random.fold_in(key, k), logits.astype(jnp.float32), axis=-1)
    write_BxD = (~known_BxD) & (sigma_BxD < end) & (~keep_BxD)
    return jnp.where(write_BxD.reshape(x.shape), drawn, x).astype(jnp.int32), None

  idx_P = jnp.arange(policy_P.shape[0])
  x, _ = jax.lax.scan(step, x_init.astype(jnp.int32), (idx_P, policy_P, ends_P))
  return x


def orders_observed_first(key: jax.Array, observed_BxD: jax.Array) -> jax.Array:
  """Random orders in which every observed variable comes before every unobserved one.

  Used for completion (inpainting / infilling): the observed variables are "generated" first, in a random
  order, then the rest in a random order, so the model conditions on all observations.

  Args:
    key: PRNG key.
    observed_BxD: bool [B, D].

  Returns:
    int32 [B, D] orders (ranks) with every observed variable ranked below every unobserved one.
  """
  batch_size, num_steps = observed_BxD.shape
  # Distinct integer sort keys (a random rank, shifted by D when unobserved): no ties, as in sample_orders.
  rank_BxD = sample_orders(key, batch_size, num_steps)
  sort_key_BxD = jnp.where(observed_BxD, rank_BxD, num_steps + rank_BxD)
  return jnp.argsort(jnp.argsort(sort_key_BxD, axis=-1), axis=-1).astype(jnp.int32)
