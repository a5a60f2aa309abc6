"""Upscale ARDMs over stages and steps: the stochastic ELBO, policy likelihoods and sampling (JAX, no network).

Stage s (s = 0..S-1) is an OA-ARDM over all D variables that refines every variable from its level-s state to its
level-(s+1) state (`transitions`), conditioned on everything the earlier stages produced; the negative
log-likelihood is the sum over stages. This module walks orders, steps and policies over the stages; the
per-variable conditionals come from `upscale_spec`, so every walk here shares one definition of p.

What the network sees at stage s, step t (one call, as in the OA-ARDM):
  x_in[i]  = the level-(s+1) state of variable i if it is already refined in this stage (sigma_s[i] < t),
             else its level-s state (which already carries everything the earlier stages generated);
  known[i] = sigma_s[i] < t, for this stage's order sigma_s;
  t_net    = s * D + t, so one time embedding over S * D steps tells the network the stage and the step;
             with model.stage_input the network also reads s = t_net // D as S one-hot mask channels (the
             official upscale input).

The network is a plain `apply_fn(params, x_in, known, t_net, train, dropout_key) -> [B, ..., O]` (see `ardm`).
Orders are per stage, sigma_BxSxD. A policy for all stages is one increasing array of global step starts
g = s * D + t that contains every stage start s * D (`flatten_policies` builds it from per-stage policies), so one
`lax.scan` walks all stages and a policy step never spans two stages. The plain OA-ARDM is the one-stage case
(`transitions.single_stage`, t_net = t). Losses are in nats per example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import ardm, upscale_spec
from ardm_jax import policy as policy_lib

ApplyFn = ardm.ApplyFn


# ----------------------------------------------------------------------------------------------- ELBO
def _stage_call(
  apply_fn: ApplyFn,
  params: Any,
  spec: upscale_spec.Upscale,
  x: jax.Array,
  stage_B: jax.Array,
  known_BxD: jax.Array,
  t_B: jax.Array,
  train: bool,
  key: jax.Array | None,
) -> jax.Array:
  """One network call at (stage, t) on data x; returns log p(x_i^{(s+1)} | ...) as float32 [B, D]."""
  num_steps = int(np.prod(x.shape[1:]))
  known = known_BxD.reshape(x.shape)
  x_in, _, _ = upscale_spec.stage_inputs(spec, x, stage_B, known)
  net_out = apply_fn(params, x_in, known, stage_B * num_steps + t_B, train, key)
  want = x.shape + (spec.num_outputs,)
  if net_out.shape != want:
    raise ValueError(
      f"the network returned {net_out.shape}, the upscale model needs {want}; build the network with "
      f"num_outputs={spec.num_outputs} and num_input_classes={spec.num_input_classes}"
    )
  return upscale_spec.log_probs_of_data(spec, net_out, x, stage_B)


def elbo_terms(
  apply_fn: ApplyFn,
  params: Any,
  x: jax.Array,
  key: jax.Array,
  *,
  spec: upscale_spec.Upscale,
  t_sampling: str = "uniform",
  train: bool = False,
) -> dict[str, jax.Array]:
  """Stochastic upscale ELBO terms per example: draws a stage, a step and an order; one network call.

  (stage, t) is drawn as one global step uniform on 0..S*D-1 (`ardm.sample_steps`, so 'stratified' spreads the
  batch over stages and steps alike); that makes the stage and the step independent and uniform.

  Args:
    apply_fn: the network, `apply_fn(params, x_in, known, t_net, train, key) -> [B, ..., O]`.
    params: its parameters.
    x: int [B, ...] data values (D variables per example).
    key: PRNG key for the order, the step and dropout.
    spec: the model.
    t_sampling: 'uniform' or 'stratified' (see `ardm.sample_steps`).
    train: passed to the network (dropout).

  Returns:
    The dict of `elbo_terms_given`, each entry [B].
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
  spec: upscale_spec.Upscale,
  train: bool = False,
  key: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Upscale ELBO terms per example for given stages, orders (of that stage) and steps.

  Args:
    apply_fn: the network (see `elbo_terms`).
    params: its parameters.
    x: int [B, ...] data values.
    stage_B: int [B], the stage s per example.
    sigma_BxD: int [B, D], stage s's order (ranks) per example.
    t_B: int [B], the step t in 0..D-1 (variables of stage s already refined).
    spec: the model.
    train: passed to the network.
    key: dropout key, or None.

  Returns:
    A dict of [B] arrays:
      nll: S * (D / (D - t)) * sum_{sigma >= t} -log p(x_i^{(s+1)} | ...) in nats; its expectation over uniform
        stage, t and sigma is the sum over stages of each stage's negative ELBO.
      ce: the unweighted sum (the auxiliary cross-entropy term).
      lt_bits: (1 / (D - t)) * sum -log2 p, the per-step loss of step t of stage s.
      t: int32, the global step s * D + t (what the network sees; the index into an [S * D] L_t tracker, i.e.
        [S, D] row-major).
      stage, t_in_stage: int32 s and t.
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
  """The sequential global policy: one variable per call in every stage.

  Args:
    num_stages: S.
    num_steps: D.

  Returns:
    int32 [S * D], `arange(S * D)`.
  """
  return np.arange(num_stages * num_steps, dtype=np.int32)


def flatten_policies(stage_policies: Sequence, num_steps: int) -> np.ndarray:
  """Joins per-stage policies into one global policy.

  Args:
    stage_policies: S OA-ARDM policies over D steps each (budgets may differ per stage).
    num_steps: D.

  Returns:
    int32 [P] global steps s * D + t, P = the sum of the stage budgets; every stage start s * D is included.

  Raises:
    ValueError: if no policy is given or a stage's policy is not valid for D steps.
  """
  if len(stage_policies) == 0:
    raise ValueError("no stage policies given; pass one policy per stage")
  for s, steps in enumerate(stage_policies):
    try:
      policy_lib.check_policy_steps(steps, num_steps)
    except ValueError as e:
      raise ValueError(f"stage {s}: {e}") from None
  return policy_lib.flatten_stage_policies(stage_policies, num_steps).astype(np.int32)


def validate_policy(policy, num_steps: int, num_stages: int) -> np.ndarray:
  """Checks a global policy on the host.

  Args:
    policy: int [P] global steps.
    num_steps: D.
    num_stages: S.

  Returns:
    The policy as int32 [P].

  Raises:
    ValueError: unless it starts at 0, strictly increases below S * D and contains every stage start s * D.
  """
  return policy_lib.check_global_policy(policy, num_steps, num_stages).astype(np.int32)


def _policy_ends(policy_P: jax.Array, total: int) -> jax.Array:
  return jnp.concatenate([policy_P[1:], jnp.array([total], policy_P.dtype)])


def _stage_orders(sigma_BxSxD: jax.Array, stage_B: jax.Array) -> jax.Array:
  return jnp.take_along_axis(sigma_BxSxD, stage_B[:, None, None], axis=1)[:, 0]


def sample_stage_orders(key: jax.Array, batch_size: int, num_stages: int, num_steps: int) -> jax.Array:
  """Independent uniformly random orders per example and stage.

  Args:
    key: PRNG key.
    batch_size: B.
    num_stages: S.
    num_steps: D.

  Returns:
    int32 [B, S, D]; row [b, s] is a random permutation of 0..D-1 (the ranks sigma_s of example b).
  """
  return ardm.sample_orders(key, batch_size * num_stages, num_steps).reshape(batch_size, num_stages, num_steps)


def policy_elbo_terms(
  apply_fn: ApplyFn, params: Any, x: jax.Array, key: jax.Array, policy_P: jax.Array, *, spec: upscale_spec.Upscale
) -> dict[str, jax.Array]:
  """Unbiased one-call estimate of the negative log-likelihood under a global policy.

  Draws orders for every stage and one global policy step k uniformly per example; P times the nats of step k has
  expectation sum_s E_sigma[-log p_policy_s(x^{(s+1)} | x^{(s)}, sigma_s)].

  Args:
    apply_fn: the network (see `elbo_terms`).
    params: its parameters.
    x: int [B, ...] data values.
    key: PRNG key for the orders and the policy steps.
    policy_P: int [P] global policy (see `validate_policy`).
    spec: the model.

  Returns:
    The dict of `policy_terms_given`, each entry [B].
  """
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
  spec: upscale_spec.Upscale,
) -> dict[str, jax.Array]:
  """P times the nats of one global policy step per example (see `policy_elbo_terms`).

  Args:
    apply_fn: the network (see `elbo_terms`).
    params: its parameters.
    x: int [B, ...] data values.
    sigma_BxSxD: int [B, S, D] orders per stage.
    k_B: int [B], the index of the policy step per example.
    policy_P: int [P] global policy.
    spec: the model.

  Returns:
    A dict of [B] arrays: nll, -P * sum over the variables that step k generates of log p, in nats; t, the
    step's global start; stage, its stage.
  """
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
  spec: upscale_spec.Upscale,
  per_stage: bool = False,
) -> jax.Array:
  """Exact log p(x | sigma, policy) in nats, one network call per policy step.

  Args:
    apply_fn: the network (see `elbo_terms`).
    params: its parameters.
    x: int [B, ...] data values.
    sigma_BxSxD: int [B, S, D] orders per stage.
    policy_P: int [P] global policy (see `validate_policy`).
    spec: the model.
    per_stage: return each stage's term instead of their sum.

  Returns:
    float32 [B], the sum over stages; with `per_stage`, [B, S], each stage's own
    log p(x^{(s+1)} | x^{(s)}, sigma_s, policy) (`order_bound` averages each stage over its own orders).
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
  spec: upscale_spec.Upscale,
  observed: jax.Array | None = None,
  return_chain: bool = False,
):
  """Generates stage by stage under a global policy; sequential sampling is `sequential_policy(S, D)`.

  Every call samples a slot for each variable of its step from `upscale_spec.slot_log_probs` (float32
  Gumbel-argmax) and moves the variable to that child of its coarse state, so each stage only refines.

  Args:
    apply_fn: the network (see `elbo_terms`).
    params: its parameters.
    key: PRNG key; call k uses `fold_in(key, k)`.
    x_init: int [B, ...]; the data values of `observed` positions (other values are ignored).
    sigma_BxSxD: int [B, S, D] orders per stage. Put observed variables first in each stage (e.g. with
      `ardm.orders_observed_first`) so the model conditions on them.
    policy_P: int [P] global policy.
    spec: the model.
    observed: bool [B, ...] or None; these variables take their level-(s+1) state from x_init in stage s
      instead of being sampled.
    return_chain: also return the states after every call.

  Returns:
    int32 [B, ...] data values, or with `return_chain` a tuple (x, chain) with chain int32 [P, B, ...] the states
    after each call.
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
    x = jnp.where(keep & known, upscale_spec.states_at(spec, x_init, stage_B + 1), x)
    net_out = apply_fn(params, x, known, jnp.full((batch_size,), start_g, jnp.int32), False, None)
    # Known positions already hold level-(s+1) states; their parents give every position a valid coarse state.
    coarse = jnp.where(known, upscale_spec.parents_of(spec, x, stage_B), x)
    key_k = jax.random.fold_in(key, k)
    if spec.parametrisation == "data" and spec.transitions.slots_are_classes:
      slot = spec.distribution.sample(key_k, net_out)  # no [..., K] table: K may be 65,536
    else:
      slot = jax.random.categorical(key_k, upscale_spec.slot_log_probs(spec, net_out, coarse, stage_B), axis=-1)
    slot = slot.astype(jnp.int32)
    new = jnp.where(
      keep, upscale_spec.states_at(spec, x_init, stage_B + 1), upscale_spec.child_state(spec, coarse, slot, stage_B)
    )
    x = jnp.where((~known) & (sigma < end), new, x).astype(jnp.int32)
    return x, (x if return_chain else None)

  x0 = jnp.full(x_init.shape, spec.transitions.absorbing_state, jnp.int32)
  idx_P = jnp.arange(policy_P.shape[0])
  x, chain = jax.lax.scan(step, x0, (idx_P, policy_P, ends_P))
  return (x, chain) if return_chain else x
