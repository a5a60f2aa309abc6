"""Output distributions against float64 references: normalisation, range masses, sampling frequencies, coding
tables that keep every class encodable, and finite gradients at the edge bins."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit

from ardm_jax.coding import entropy_models
from ardm_jax.distributions import Categorical, DiscretisedLogisticMixture, build_distribution


def _logistic_reference(net_out, K, M):
  """float64 pmf [..., K] from the mixture's CDF at the bin edges (tails folded into the end bins)."""
  out = np.asarray(net_out, np.float64)
  logits, means, log_scales = out[..., :M], out[..., M : 2 * M], out[..., 2 * M :]
  means = means + np.linspace(-1 + 1 / M, 1 - 1 / M, M)
  log_scales = np.clip(log_scales - np.log(M), -7.0, 7.0)
  pi = np.exp(logits - logits.max(-1, keepdims=True))
  pi /= pi.sum(-1, keepdims=True)
  edges = np.concatenate([[-np.inf], (2 * np.arange(K - 1) + 1) / (K - 1) - 1, [np.inf]])  # c_k + h
  z = (edges[None] - means[..., None]) / np.exp(log_scales)[..., None]  # [..., M, K+1]
  cdf = expit(z)
  return np.einsum("...m,...mk->...k", pi, np.diff(cdf, axis=-1))


def _random_out(shape, M, scale=1.0, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(*shape, 3 * M)) * scale, jnp.float32)


@pytest.mark.parametrize("K", [16, 256])
def test_logistic_pmf_matches_float64_reference_and_sums_to_one(K):
  M = 3
  dist = DiscretisedLogisticMixture(K, M)
  net_out = _random_out((4, 5), M, scale=1.5)
  logp = np.asarray(jax.jit(dist.log_pmf)(net_out), np.float64)
  ref = _logistic_reference(net_out, K, M)
  assert np.abs(np.exp(logp).sum(-1) - 1).max() < 2e-5
  mask = ref > 1e-30
  np.testing.assert_allclose(logp[mask], np.log(ref[mask]), rtol=1e-4, atol=2e-4)
  # log_prob of every class is the pmf's entry.
  x = jnp.broadcast_to(jnp.arange(K), (4, 5, K))
  per_class = jax.jit(jax.vmap(dist.log_prob, in_axes=(None, -1), out_axes=-1))(net_out, x)
  np.testing.assert_allclose(per_class, logp, rtol=1e-5, atol=1e-5)


def test_logistic_sixteen_bit_bins_are_finite_and_normalised():
  """K = 65,536 with components at the sharpest allowed scale: no bin underflows to -inf, mass sums to 1."""
  K, M = 65536, 2
  dist = DiscretisedLogisticMixture(K, M)
  out = np.zeros((3, 3 * M), np.float32)
  out[:, 2 * M :] = -50.0  # log-scales clipped to the minimum
  out[:, M : 2 * M] = [[0.0, 0.3], [-1.5, 0.5], [40.0, -40.0]]  # the last row sits far outside [-1, 1]
  logp = np.asarray(jax.jit(dist.log_pmf)(jnp.asarray(out)), np.float64)
  assert np.isfinite(logp).all()
  np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=1e-4)
  ref = _logistic_reference(out, K, M)
  mask = ref > 1e-12
  np.testing.assert_allclose(logp[mask], np.log(ref[mask]), rtol=1e-3, atol=1e-3)
  counts = entropy_models.quantise_counts(np.asarray(dist.coding_logits(jnp.asarray(out))))
  assert counts.min() >= 1 and (counts.sum(-1) == 1 << entropy_models.PRECISION).all()


def test_logistic_range_mass_equals_summed_pmf():
  K, M = 64, 4
  dist = DiscretisedLogisticMixture(K, M)
  net_out = _random_out((6, 7), M, seed=1)
  rng = np.random.default_rng(2)
  a, b = rng.integers(0, K, size=(2, 6, 7))
  lo, hi = np.minimum(a, b), np.maximum(a, b)
  lo[0, :3], hi[0, :3] = 0, K - 1  # whole range: mass 1
  mass, logp = jax.jit(lambda: (dist.log_mass(net_out, jnp.asarray(lo), jnp.asarray(hi)), dist.log_pmf(net_out)))()
  p = np.exp(np.asarray(logp, np.float64))
  want = np.array([[p[i, j, lo[i, j] : hi[i, j] + 1].sum() for j in range(7)] for i in range(6)])
  np.testing.assert_allclose(np.exp(np.asarray(mass, np.float64)), want, rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(mass)[0, :3], 0.0, atol=1e-6)


def test_logistic_extreme_outputs_stay_finite_and_codable():
  K, M = 256, 3
  dist = DiscretisedLogisticMixture(K, M)
  net_out = _random_out((2, 50), M, scale=1e4, seed=3)
  logp = np.asarray(jax.jit(dist.coding_logits)(net_out))
  assert np.isfinite(logp).all()
  counts = entropy_models.quantise_counts(logp)
  assert counts.min() >= 1 and (counts.sum(-1) == 1 << entropy_models.PRECISION).all()
  # Edge bins and saturated components: gradients are finite (no NaN leaking from an unselected branch).
  x = jnp.asarray(np.random.default_rng(4).choice([0, 1, K - 2, K - 1], size=(2, 50)), jnp.int32)
  grads = jax.jit(jax.grad(lambda o: dist.log_prob(o, x).sum()))(net_out)
  assert np.isfinite(np.asarray(grads)).all()


def test_logistic_samples_follow_the_pmf():
  K, M, n = 8, 2, 40000
  dist = DiscretisedLogisticMixture(K, M)
  net_out = jnp.asarray([[0.5, -0.3, -0.4, 0.2, 0.3, 1.2]], jnp.float32)
  draws = jax.jit(lambda k: dist.sample(k, jnp.broadcast_to(net_out, (n, 3 * M))))(jax.random.PRNGKey(0))
  freq = np.bincount(np.asarray(draws), minlength=K) / n
  p = np.exp(np.asarray(dist.log_pmf(net_out), np.float64))[0]
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-3)


def test_categorical_matches_softmax_ranges_and_samples():
  K, n = 5, 40000
  dist = Categorical(K)
  logits = jnp.asarray([[1.0, -0.5, 0.2, 2.0, -3.0]], jnp.float32)
  p = np.exp(np.asarray(jax.nn.log_softmax(logits), np.float64))[0]
  assert dist.num_outputs == K
  np.testing.assert_allclose(np.exp(dist.log_prob(logits, jnp.array([3]))), p[3], rtol=1e-6)
  lo, hi = jnp.array([[1, 0, 4]]), jnp.array([[3, 4, 4]])
  mass = np.exp(np.asarray(dist.log_mass(jnp.broadcast_to(logits[:, None], (1, 3, K)), lo, hi)))
  np.testing.assert_allclose(mass[0], [p[1:4].sum(), 1.0, p[4]], rtol=1e-6)
  draws = jax.jit(lambda k: dist.sample(k, jnp.broadcast_to(logits, (n, K))))(jax.random.PRNGKey(1))
  freq = np.bincount(np.asarray(draws), minlength=K) / n
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n) + 1e-3)
  counts = entropy_models.quantise_counts(np.asarray(dist.coding_logits(logits)))
  assert counts.min() >= 1


def test_build_distribution_and_bad_input():
  assert build_distribution("logistic_mixture", 65536).num_outputs == 90  # 30 mixtures by default
  assert build_distribution("categorical", 17).num_outputs == 17
  for bad in (
    lambda: build_distribution("gaussian", 4),
    lambda: build_distribution("categorical", 4, num_mixtures=3),
    lambda: build_distribution("logistic_mixture", 4, mixtures=3),
    lambda: DiscretisedLogisticMixture(1, 3),
    lambda: DiscretisedLogisticMixture(256, 0),
    lambda: DiscretisedLogisticMixture(256, 2).log_prob(jnp.zeros((1, 5)), jnp.zeros((1,), jnp.int32)),
  ):
    with pytest.raises(ValueError):
      bad()
