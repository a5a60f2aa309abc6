"""Exact checks of the OA-ARDM math on problems small enough to enumerate every order and step."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ardm_jax import ardm

D, K = 4, 3  # enumerable: 4! orders x 4 steps


def toy_net_apply(params, x_in, known, t, train, key):
  """A tiny MLP that really conditions on values, mask and step (a stand-in for the real nets)."""
  del train, key
  batch = x_in.shape[0]
  onehot = jax.nn.one_hot(x_in.reshape(batch, -1), K + 1).reshape(batch, -1)
  feats = jnp.concatenate([onehot, known.reshape(batch, -1).astype(jnp.float32), t[:, None] / D], axis=-1)
  hidden = jnp.tanh(feats @ params["w1"])
  return (hidden @ params["w2"]).reshape(*x_in.shape, K)


def toy_params(seed=0, width=16):
  rng = np.random.default_rng(seed)
  n_in = D * (K + 1) + D + 1
  return {
    "w1": jnp.asarray(rng.normal(size=(n_in, width)), jnp.float32),
    "w2": jnp.asarray(rng.normal(size=(width, D * K)), jnp.float32),
  }


def all_orders():
  """Every permutation as ranks sigma[i] = step of variable i."""
  return np.array([np.argsort(p) for p in itertools.permutations(range(D))], np.int32)


def all_data():
  return np.array(list(itertools.product(range(K), repeat=D)), np.int32)


def test_sample_orders_are_permutations():
  sigma = np.asarray(ardm.sample_orders(jax.random.PRNGKey(0), 64, 10))
  assert (np.sort(sigma, axis=1) == np.arange(10)).all()
  # At text8 size, ranks of float32 uniforms would tie (and be ordered by position); a permutation cannot.
  sigma = np.asarray(ardm.sample_orders(jax.random.PRNGKey(1), 4, 16000))
  assert (np.sort(sigma, axis=1) == np.arange(16000)).all()


def test_sample_orders_are_uniform_over_permutations_and_per_row():
  """All 4! orders equally often (chi-square, 23 degrees of freedom), and a row's order does not depend on the
  batch size (padding a batch to divide the devices keeps the real rows' orders)."""
  n, d = 24000, 4
  sigma = np.asarray(ardm.sample_orders(jax.random.PRNGKey(2), n, d))
  codes = sigma @ (d ** np.arange(d))
  counts = np.unique(codes, return_counts=True)[1]
  assert len(counts) == 24
  chi2 = float(np.sum((counts - n / 24) ** 2 / (n / 24)))
  assert chi2 < 49.7, chi2  # the 0.999 quantile of chi-square(23): a fair sampler fails 1 seed in 1000
  np.testing.assert_array_equal(np.asarray(ardm.sample_orders(jax.random.PRNGKey(2), 5, d)), sigma[:5])


def test_known_mask_counts_t_known_variables():
  sigma = ardm.sample_orders(jax.random.PRNGKey(1), 32, 7)
  t = jnp.arange(32) % 7
  assert (np.asarray(ardm.known_mask(sigma, t).sum(-1)) == np.asarray(t)).all()


def test_corrupt_hides_unknown_values():
  x = jnp.array([[0, 1, 2, 1]])
  known = jnp.array([[True, False, True, False]])
  assert ardm.corrupt(x, known, K).tolist() == [[0, K, 2, K]]


@pytest.mark.parametrize("mode", ["uniform", "stratified"])
def test_step_sampling_is_marginally_uniform(mode):
  # 4000 batches of 8: every batch slot must see each of the 5 steps about 800 times (5-sigma band).
  keys = jax.random.split(jax.random.PRNGKey(2), 4000)
  t = np.asarray(jax.vmap(lambda k: ardm.sample_steps(k, 8, 5, mode))(keys))
  counts = np.stack([np.bincount(t[:, b], minlength=5) for b in range(8)])
  assert np.abs(counts - 800).max() < 5 * np.sqrt(800 * 0.8)
  if mode == "stratified":  # the batch covers the steps evenly: every step appears once or twice per batch
    per_batch = np.stack([np.bincount(row, minlength=5) for row in t])
    assert per_batch.min() >= 1 and per_batch.max() <= 2


def test_loss_weight_is_d_over_d_minus_t():
  params = toy_params()
  x = jnp.asarray(all_data()[:6])
  sigma = jnp.asarray(all_orders()[:6])
  t = jnp.array([0, 1, 2, 3, 1, 2])
  out = ardm.elbo_terms_given(toy_net_apply, params, x, sigma, t, num_classes=K)
  np.testing.assert_allclose(out["nll"], out["ce"] * D / (D - np.asarray(t)), rtol=1e-6)
  np.testing.assert_allclose(out["lt_bits"], out["ce"] / (D - np.asarray(t)) / np.log(2), rtol=1e-6)


def test_bits_per_dim_conversion():
  assert ardm.bits_per_dim(np.log(2.0) * 12, 3) == pytest.approx(4.0)


def test_estimator_expectation_equals_order_averaged_exact_likelihood():
  """E_{t,sigma}[D/(D-t) sum_{sigma>=t} -log p] == E_sigma[-log p(x | sigma)] for every x (exact)."""
  params = toy_params(3)
  orders, xs = all_orders(), all_data()
  n_orders = len(orders)
  # Every (x, sigma, t) triple at once.
  x_rep = np.repeat(xs, n_orders * D, axis=0)
  sigma_rep = np.tile(np.repeat(orders, D, axis=0), (len(xs), 1))
  t_rep = np.tile(np.arange(D, dtype=np.int32), len(xs) * n_orders)
  est = ardm.elbo_terms_given(
    toy_net_apply, params, jnp.asarray(x_rep), jnp.asarray(sigma_rep), jnp.asarray(t_rep), num_classes=K
  )["nll"]
  expected_estimator = np.asarray(est).reshape(len(xs), -1).mean(axis=1)

  x_ord = np.repeat(xs, n_orders, axis=0)
  sigma_ord = np.tile(orders, (len(xs), 1))
  logp = ardm.policy_log_likelihood(
    toy_net_apply, params, jnp.asarray(x_ord), jnp.asarray(sigma_ord), jnp.arange(D, dtype=jnp.int32), num_classes=K
  )
  exact = -np.asarray(logp).reshape(len(xs), n_orders).mean(axis=1)
  np.testing.assert_allclose(expected_estimator, exact, rtol=1e-5)


def test_sequential_likelihood_matches_hand_chain_rule():
  """policy_log_likelihood with arange(D) is the chain rule along sigma, computed here step by step."""
  params = toy_params(4)
  x = jnp.asarray(all_data()[[5, 40, 77]])
  sigma = jnp.asarray(all_orders()[[0, 11, 23]])
  total = np.zeros(3)
  for t in range(D):
    known = np.asarray(sigma) < t
    xin = np.where(known, np.asarray(x), K)
    logits = toy_net_apply(params, jnp.asarray(xin), jnp.asarray(known), jnp.full((3,), t), False, None)
    logp = np.asarray(jax.nn.log_softmax(logits))
    for b in range(3):
      i = int(np.where(np.asarray(sigma)[b] == t)[0][0])
      total[b] += logp[b, i, int(x[b, i])]
  got = ardm.policy_log_likelihood(toy_net_apply, params, x, sigma, jnp.arange(D, dtype=jnp.int32), num_classes=K)
  np.testing.assert_allclose(got, total, rtol=1e-5)


@pytest.mark.parametrize("policy", [[0], [0, 2], [0, 1, 3], [0, 1, 2, 3]])
def test_policy_estimator_expectation_equals_exact_policy_likelihood(policy):
  params = toy_params(5)
  policy = jnp.asarray(policy, jnp.int32)
  orders = all_orders()
  x = all_data()[17]
  n_calls = policy.shape[0]
  sigma_rep = np.repeat(orders, n_calls, axis=0)
  k_rep = np.tile(np.arange(n_calls), len(orders))
  x_rep = np.repeat(x[None], len(sigma_rep), axis=0)
  est = ardm.policy_terms_given(
    toy_net_apply, params, jnp.asarray(x_rep), jnp.asarray(sigma_rep), jnp.asarray(k_rep), policy, num_classes=K
  )["nll"]
  exact = -ardm.policy_log_likelihood(
    toy_net_apply, params, jnp.asarray(np.repeat(x[None], len(orders), 0)), jnp.asarray(orders), policy, num_classes=K
  )
  np.testing.assert_allclose(np.mean(est), np.mean(exact), rtol=1e-5)


def test_one_step_policy_probabilities_sum_to_one_over_all_data():
  """With a fixed order and any policy, p(x | sigma, policy) is a normalised distribution over all K^D x."""
  params = toy_params(6)
  xs = jnp.asarray(all_data())
  sigma = jnp.asarray(np.repeat(all_orders()[7][None], len(xs), 0))
  for policy in ([0], [0, 2], [0, 1, 2, 3]):
    logp = ardm.policy_log_likelihood(toy_net_apply, params, xs, sigma, jnp.asarray(policy, jnp.int32), num_classes=K)
    assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, rel=1e-5)


def test_unknown_values_are_invisible_to_the_loss_and_its_gradient():
  """Dependency check: changing values at unknown positions changes only their own target terms."""
  params = toy_params(7)
  sigma = jnp.asarray(all_orders()[[3, 9]])
  t = jnp.array([2, 1])
  x1 = jnp.array([[0, 1, 2, 0], [2, 2, 1, 0]])
  known = np.asarray(ardm.known_mask(sigma, t))
  x2 = jnp.asarray(np.where(known, np.asarray(x1), (np.asarray(x1) + 1) % K))

  def logits_of(x):
    return toy_net_apply(params, ardm.corrupt(x, jnp.asarray(known), K), jnp.asarray(known), t, False, None)

  np.testing.assert_array_equal(logits_of(x1), logits_of(x2))

  # Through gradients: d loss / d (one-hot input) is zero at unknown positions.
  def loss_of_onehot(onehot):
    visible = jnp.where(jnp.asarray(known)[..., None], onehot, jax.nn.one_hot(K, K + 1))
    logits = toy_net_apply_onehot(params, visible, jnp.asarray(known), t)
    return jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(x1, K))

  grad = jax.grad(loss_of_onehot)(jax.nn.one_hot(x1, K + 1))
  assert np.abs(np.asarray(grad)[~known]).max() == 0.0
  assert np.abs(np.asarray(grad)[known]).max() > 0.0


def toy_net_apply_onehot(params, onehot, known, t):
  batch = onehot.shape[0]
  feats = jnp.concatenate(
    [onehot.reshape(batch, -1), known.reshape(batch, -1).astype(jnp.float32), t[:, None] / D], axis=-1
  )
  return (jnp.tanh(feats @ params["w1"]) @ params["w2"]).reshape(*onehot.shape[:-1], K)


def test_generate_respects_policy_and_observed_values():
  """One network call per policy step; call k sees exactly the variables with sigma < s_k, and those it adds are the
  ones with sigma in [s_k, s_{k+1}); observed values are never overwritten."""
  params = toy_params(8)
  batch, policy = 16, [0, 1, 3]
  sigma = ardm.sample_orders(jax.random.PRNGKey(3), batch, D)
  observed = jnp.zeros((batch, D), bool).at[:, 0].set(True)
  x_init = jnp.full((batch, D), K).at[:, 0].set(1)
  calls = []

  def recording_apply(params, x_in, known, t, train, key):
    jax.debug.callback(lambda *a: calls.append([np.asarray(v) for v in a]), x_in, known, t, ordered=True)
    return toy_net_apply(params, x_in, known, t, train, key)

  out = ardm.generate(
    recording_apply,
    params,
    jax.random.PRNGKey(4),
    x_init,
    sigma,
    jnp.asarray(policy, jnp.int32),
    num_classes=K,
    observed=observed,
  )
  out, sigma, observed = np.asarray(out), np.asarray(sigma), np.asarray(observed)
  assert len(calls) == len(policy)
  for (x_in, known, t), start in zip(calls, policy):
    np.testing.assert_array_equal(known, sigma < start)
    np.testing.assert_array_equal(t, start)
    # Known variables hold their final values (written once, by the call of their policy step); the rest are hidden.
    np.testing.assert_array_equal(x_in, np.where(sigma < start, out, K))
  assert (out[:, 0] == 1).all() and out.min() >= 0 and out.max() < K
  assert (out[~observed] != 1).any()  # the unobserved variables were sampled, not copied from x_init


def test_orders_observed_first():
  observed = jnp.asarray([[True, False, True, False, False]])
  sigma = np.asarray(ardm.orders_observed_first(jax.random.PRNGKey(0), observed))[0]
  assert sorted(sigma[[0, 2]]) == [0, 1] and sorted(sigma[[1, 3, 4]]) == [2, 3, 4]
  big = jnp.arange(16000)[None] % 3 == 0
  sigma = np.asarray(ardm.orders_observed_first(jax.random.PRNGKey(1), big))[0]
  assert (np.sort(sigma) == np.arange(16000)).all() and sigma[np.asarray(big[0])].max() < int(big.sum())


def test_generate_single_step_policy_samples_the_model_marginals():
  """Budget 1 draws every variable from the first call's distribution: compare frequencies."""
  params = toy_params(9)
  batch = 20000
  sigma = ardm.sample_orders(jax.random.PRNGKey(5), batch, D)
  x = ardm.generate(
    toy_net_apply,
    params,
    jax.random.PRNGKey(6),
    jnp.full((batch, D), K),
    sigma,
    jnp.asarray([0], jnp.int32),
    num_classes=K,
  )
  logits = toy_net_apply(params, jnp.full((1, D), K), jnp.zeros((1, D), bool), jnp.zeros((1,), jnp.int32), False, None)
  probs = np.asarray(jax.nn.softmax(logits))[0]
  freqs = np.stack([np.bincount(np.asarray(x)[:, i], minlength=K) / batch for i in range(D)])
  np.testing.assert_allclose(freqs, probs, atol=0.015)
