"""The importance-weighted bound over orders (ardm_jax/order_bound.py) on problems small enough to enumerate every
order: it reaches the exact log p(x) when the orders cover every permutation, its expectation is the ELBO at K = 1
and grows with K, K = 1 is the per-order likelihood, and upscale models take orders per stage. `ardm eval --orders`
is tested in test_cli.py (on its trained workdir)."""

import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from test_upscale import SPECS, all_orders, toy_apply_and_params

from ardm_jax import ardm, baselines, order_bound, transitions, upscale, upscale_spec
from ardm_jax.jobs import evaluate as eval_job

D = 3  # 3! = 6 orders


def oa_problem(num_classes=4, seed=0):
  spec = upscale_spec.Upscale(transitions.single_stage(num_classes), "data")
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=seed)
  items = np.array(list(itertools.product(range(num_classes), repeat=D)), np.int32)
  return spec, apply_fn, params, items


def hand_log_likelihood(apply_fn, params, x, sigma, policy, num_classes):
  """log p(x | sigma, policy) of one item, one network call per policy step, written out in NumPy."""
  ends = list(policy[1:]) + [D]
  total = 0.0
  for start, end in zip(policy, ends):
    known = sigma < start
    x_in = np.where(known, x, num_classes)
    logits = apply_fn(params, jnp.asarray(x_in[None]), jnp.asarray(known[None]), jnp.array([start]), False, None)
    logp = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32)), np.float64)
    for i in np.flatnonzero((sigma >= start) & (sigma < end)):
      total += logp[i, x[i]]
  return total


@pytest.mark.parametrize("policy", [None, [0, 2]])
def test_all_orders_give_the_exact_log_likelihood(policy):
  """With the D! orders passed explicitly the bound is log mean_sigma p(x | sigma), computed here by hand; that is
  a normalised distribution over all K^D items, which no single order's bound at K < D! needs to be."""
  spec, apply_fn, params, items = oa_problem()
  orders = all_orders(D)
  ll = order_bound.order_log_likelihoods(apply_fn, spec, params, items, orders=orders, policy=policy, batch_size=50)
  assert ll.shape == (len(items), len(orders), 1)
  bits = order_bound.bound_bits(ll, D)
  steps = np.arange(D) if policy is None else np.asarray(policy)
  for n in (0, 17, 63):
    per_order = [hand_log_likelihood(apply_fn, params, items[n], sigma, steps, spec.num_classes) for sigma in orders]
    exact = logsumexp(per_order) - np.log(len(orders))
    assert bits[n] == pytest.approx(-exact / (D * np.log(2.0)), rel=1e-5)
  total = np.exp(-bits * D * np.log(2.0)).sum()
  assert total == pytest.approx(1.0, abs=1e-5)


def test_bound_expectation_is_the_elbo_at_k1_and_grows_with_k():
  """E over random orders of the bound: = the ELBO at K = 1 (enumerating every order and step), strictly larger
  likelihood at K = 2 and 3 (orders drawn independently, with repeats), never past log p(x)."""
  spec, apply_fn, params, items = oa_problem(num_classes=3, seed=1)
  items = items[::4]
  orders = all_orders(D)
  ll = order_bound.order_log_likelihoods(apply_fn, spec, params, items, orders=orders, batch_size=64)

  combos = np.array(list(itertools.product(range(len(orders)), range(D))))  # every (sigma, t)
  rep = np.repeat(items, len(combos), axis=0)
  terms = jax.jit(
    lambda x, sig, t: upscale.elbo_terms_given(apply_fn, params, x, jnp.zeros_like(t), sig, t, spec=spec)
  )(
    jnp.asarray(rep),
    jnp.asarray(np.tile(orders[combos[:, 0]], (len(items), 1))),
    jnp.asarray(np.tile(combos[:, 1], len(items)), jnp.int32),
  )
  elbo_bits = np.asarray(terms["nll"], np.float64).reshape(len(items), -1).mean(1) / (D * np.log(2.0))

  def expected_bound(k):  # exact expectation over k independent uniform orders
    draws = np.array(list(itertools.product(range(len(orders)), repeat=k)))  # [6^k, k]
    per = order_bound.bound_bits(ll[:, draws].reshape(-1, k, 1), D).reshape(len(items), -1)
    return per.mean(1)

  e1, e2, e3 = expected_bound(1), expected_bound(2), expected_bound(3)
  exact = order_bound.bound_bits(ll, D)
  np.testing.assert_allclose(e1, elbo_bits, rtol=2e-5)
  assert np.all(e2 < e1 - 1e-4) and np.all(e3 < e2 - 1e-5) and np.all(exact < e3)


def test_k1_is_the_per_order_likelihood_and_orders_do_not_depend_on_the_batch():
  spec, apply_fn, params, items = oa_problem(seed=2)
  items = items[[3, 20, 41, 60, 5]]
  ll = order_bound.order_log_likelihoods(apply_fn, spec, params, items, num_orders=3, batch_size=4, seed=7)
  again = order_bound.order_log_likelihoods(apply_fn, spec, params, items, num_orders=3, batch_size=15, seed=7)
  np.testing.assert_allclose(ll, again, rtol=1e-6)
  sigma = order_bound.random_orders(7, np.repeat(np.arange(5), 3), np.tile(np.arange(3), 5), 1, D)[:, 0]
  assert len({tuple(s) for s in sigma}) > 1  # the draws differ between orders and items
  # The plain OA-ARDM reference code (tests/test_ardm.py checks it by hand and against the ELBO).
  ref = ardm.policy_log_likelihood(
    apply_fn,
    params,
    jnp.asarray(np.repeat(items, 3, axis=0)),
    jnp.asarray(sigma),
    jnp.arange(D, dtype=jnp.int32),
    num_classes=spec.num_classes,
  )
  np.testing.assert_allclose(ll[:, :, 0], np.asarray(ref).reshape(5, 3), rtol=1e-5)
  result = order_bound.summarise(ll, D, elbo_per_item=np.full(5, 10.0))
  assert [row["k"] for row in result["curve"]] == [1, 2, 3]
  k1 = -ll[:, 0, 0] / (D * np.log(2.0))
  assert result["curve"][0]["bpd"] == pytest.approx(k1.mean(), rel=1e-9)
  assert result["gain_over_elbo"]["bits"] == pytest.approx(10.0 - result["curve"][-1]["bpd"], rel=1e-9)
  order_mean = -ll[:, :, 0].mean(1) / (D * np.log(2.0))
  assert result["order_mean"]["bpd"] == pytest.approx(order_mean.mean(), rel=1e-9)
  assert result["curve"][0]["gain_over_order_mean"] == pytest.approx((order_mean - k1).mean(), abs=1e-12)
  assert result["curve"][-1]["gain_over_order_mean"] > 0  # Jensen, item by item (the orders differ)
  assert order_bound.curve_ks(64) == [1, 2, 4, 8, 16, 32, 64] and order_bound.curve_ks(5) == [1, 2, 4, 5]


def test_upscale_orders_per_stage_give_the_exact_log_likelihood():
  """Every stage averages over its own orders: with all 6 per stage, the bound is log of the mean over all 6^S
  combinations of stage orders of p(x | sigma_1..sigma_S), each computed by the summed (not per-stage) code."""
  spec = SPECS["zero8_data"]()
  S = spec.num_stages
  apply_fn, params = toy_apply_and_params(spec, (D,), seed=3)
  items = np.random.default_rng(0).integers(0, spec.num_classes, size=(3, D)).astype(np.int32)
  orders = all_orders(D)
  per_stage_orders = np.repeat(orders[:, None, :], S, axis=1)
  ll = order_bound.order_log_likelihoods(apply_fn, spec, params, items, orders=per_stage_orders, batch_size=18)
  assert ll.shape == (3, 6, S)
  combos = np.array(list(itertools.product(range(len(orders)), repeat=S)))  # [216, S]
  sigma = orders[combos]  # [216, S, D]
  total = jax.jit(
    lambda x, sig: upscale.policy_log_likelihood(
      apply_fn, params, x, sig, jnp.asarray(upscale.sequential_policy(S, D)), spec=spec
    )
  )(jnp.asarray(np.repeat(items, len(combos), axis=0)), jnp.asarray(np.tile(sigma, (3, 1, 1))))
  total = np.asarray(total, np.float64).reshape(3, -1)
  exact = logsumexp(total, axis=1) - np.log(len(combos))
  np.testing.assert_allclose(order_bound.bound_bits(ll, D), -exact / (D * np.log(2.0)), rtol=1e-5)
  # Averaging K joint draws instead (the same order index in every stage) is a looser bound.
  joint = -(logsumexp(ll.sum(2), axis=1) - np.log(6)) / (D * np.log(2.0))
  assert np.all(order_bound.bound_bits(ll, D) < joint)


def test_bad_inputs_are_refused():
  spec, apply_fn, params, items = oa_problem()
  with pytest.raises(ValueError, match="--orders must be an integer >= 1"):
    order_bound.order_log_likelihoods(apply_fn, spec, params, items, num_orders=0, batch_size=4)
  with pytest.raises(ValueError, match="permutation"):
    order_bound.order_log_likelihoods(apply_fn, spec, params, items, orders=[[0, 0, 1]], batch_size=4)
  with pytest.raises(ValueError, match="needs an ARDM"):
    order_bound.order_log_likelihoods(apply_fn, baselines.ARM(4), params, items, num_orders=1, batch_size=4)
  args = types.SimpleNamespace(orders=2, exact=False, naive=False, policy=None, budget=None)
  arm_model = types.SimpleNamespace(setup=types.SimpleNamespace(objective=baselines.ARM(17)))
  with pytest.raises(ValueError, match="'arm' baseline"):
    eval_job.check_orders_args(args, arm_model)
