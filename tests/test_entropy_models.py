"""Symbol models: exact integer tables, constriction reading them exactly, and binary splits of a logistic mixture
that are the discretised mixture itself."""

from conftest import items, mixture_params, toy_predict
import constriction
import jax.numpy as jnp
import numpy as np
import pytest

from ardm_jax.coding import entropy_models, orders, walk
from ardm_jax.distributions import DiscretisedLogisticMixture


@pytest.mark.parametrize("K", [2, 17, 256, 65536])
def test_quantise_counts_are_exact_and_floored(K):
  rng = np.random.default_rng(K)
  scales = np.array([0.1, 1, 5, 30, 100, 1e3, 1e30, 1e38])[:, None]
  logits = np.clip(rng.normal(size=(8, K)) * scales, -3e38, 3e38).astype(np.float32)
  logits[1, : K // 2] = -np.inf
  logits[2, 0] = np.inf
  counts = entropy_models.quantise_counts(logits)
  assert counts.dtype == np.int64 and counts.shape == (8, K)
  assert counts.min() >= 1
  assert np.all(counts.sum(-1) == 1 << 24)
  np.testing.assert_array_equal(counts, entropy_models.quantise_counts(logits.copy()))
  for i in range(8):  # a row's table does not depend on the rows around it
    np.testing.assert_array_equal(counts[i], entropy_models.quantise_counts(logits[i]))
  probs = entropy_models.quantise_probs(logits)
  assert probs.dtype == np.float64
  np.testing.assert_array_equal(probs * 2.0**24, counts)
  # Close to the float64 softmax: every class is off by at most the floor (1 count) plus the K-count reserve.
  v = np.clip(logits[0].astype(np.float64), -1e300, 1e300)
  p = np.exp(v - v.max())
  p /= p.sum()
  assert np.abs(counts[0] / 2.0**24 - p).max() <= (K + 1) / 2.0**24
  assert counts[2, 0] == counts[2].max()  # +inf logit takes (nearly) all the mass


def test_quantise_edge_cases():
  all_ninf = np.full((1, 5), -np.inf, np.float32)
  np.testing.assert_array_equal(entropy_models.quantise_counts(all_ninf), [[(1 << 24) // 5 + 1] + [(1 << 24) // 5] * 4])
  ties = np.zeros((1, 3), np.float32)  # residual goes to the first of the tied classes
  c = entropy_models.quantise_counts(ties)
  assert c[0, 0] >= c[0, 1] == c[0, 2]
  probs = entropy_models.quantise_counts(np.array([0.0, 1.0, 3.0]), from_probs=True)
  assert probs.sum() == 1 << 24 and probs[0] == 1
  with pytest.raises(ValueError, match="NaN"):
    entropy_models.quantise_counts(np.array([0.0, np.nan], np.float32))
  with pytest.raises(ValueError, match="float"):
    entropy_models.quantise_counts(np.array([1, 2]))
  with pytest.raises(ValueError, match="2 classes"):
    entropy_models.quantise_counts(np.zeros((3, 1), np.float32))
  with pytest.raises(ValueError, match="non-negative"):
    entropy_models.quantise_counts(np.array([-1.0, 2.0]), from_probs=True)


def test_constriction_uses_our_table_exactly():
  """Probes the decoder at every interval edge: symbol i owns exactly [cum_i, cum_i + count_i)."""
  fam = constriction.stream.model.Categorical(perfect=False)
  rng = np.random.default_rng(0)
  for K in (2, 17, 300):
    counts = entropy_models.quantise_counts((rng.normal(size=(1, K)) * 8).astype(np.float32))
    cum = np.concatenate([[0], np.cumsum(counts[0])])
    weights = entropy_models.coder_weights(counts)
    for i in range(K):
      for q in (cum[i], cum[i + 1] - 1):
        if q > 0:  # a stream never ends in a zero word
          got = constriction.stream.stack.AnsCoder(np.array([q], np.uint32)).decode(fam, weights)[0]
          assert got == i, (K, i, q)


def _round_trip(model, params, x, per_item):
  B = len(x)
  coders = [constriction.stream.stack.AnsCoder() for _ in range(B if per_item else 1)]
  p, s = (params, x) if per_item else (params.reshape(1, -1, params.shape[-1]), x.reshape(1, -1))
  model.push(coders, s, p)
  words = [c.get_compressed() for c in coders]
  readers = [constriction.stream.stack.AnsCoder(w) for w in words]
  out = model.pop(readers, p)
  assert all(r.is_empty() for r in readers)
  return out.reshape(x.shape), sum(32 * len(w) for w in words)


@pytest.mark.parametrize("K", [2, 3, 37, 256])
def test_mixture_splits_are_the_discretised_mixture(K):
  """Enumerating every value: the split probabilities multiply to the mixture's own bin masses (float32 reference
  from distributions.py), and the quantised splits form a complete code (Kraft sum exactly 1)."""
  rng = np.random.default_rng(K)
  M = 4
  params = mixture_params(rng, (3,), M)
  model = entropy_models.MixtureSplits(K, M)
  x = np.tile(np.arange(K), (3, 1))
  p_all = np.broadcast_to(params[:, None], (3, K, 3 * M))
  code = model.code_bits(p_all, x)
  model_bits = model.model_bits(p_all, x)
  assert np.allclose(np.exp2(-code).sum(axis=1), 1.0, atol=1e-12)
  assert np.allclose(np.exp2(-model_bits).sum(axis=1), 1.0, atol=1e-9)
  dist = DiscretisedLogisticMixture(K, M)
  # unpack(raw) reproduces `params` when raw holds the inverse of its offsets and scale shift.
  offsets = np.linspace(-1 + 1 / M, 1 - 1 / M, M)
  raw = params.astype(np.float64).copy()
  raw[:, M : 2 * M] -= offsets
  raw[:, 2 * M :] += np.log(M)
  ref = -np.asarray(dist.log_prob(jnp.asarray(raw[:, None].repeat(K, 1), jnp.float32), jnp.asarray(x))) / np.log(2)
  big = ref < 20  # float32 bin masses are only accurate to ~1e-7 of the total
  assert np.allclose(model_bits[big], ref[big], rtol=1e-3, atol=1e-3)
  # The coder pays the model's NLL up to the 2**-24 quantisation of each split.
  assert np.all(np.abs(code - model_bits)[big] < 1e-3)


@pytest.mark.parametrize("per_item", [True, False])
def test_mixture_splits_round_trip_16_bit(per_item, monkeypatch):
  """65,536 classes, values drawn from the mixture plus both end bins and far tails; groups smaller than a
  step so the group order is exercised; the stream costs the split NLL plus at most a few words."""
  monkeypatch.setattr(entropy_models, "SPLIT_GROUP_ROWS", 7)
  rng = np.random.default_rng(1)
  K, M, B, n = 1 << 16, 30, 3, 40
  params = mixture_params(rng, (B, n), M)
  model = entropy_models.MixtureSplits(K, M)
  comp = rng.integers(0, M, (B, n))
  mu = np.take_along_axis(params[..., M : 2 * M], comp[..., None], -1)[..., 0]
  s = np.exp(np.take_along_axis(params[..., 2 * M :], comp[..., None], -1)[..., 0])
  u = rng.uniform(1e-6, 1 - 1e-6, (B, n))
  x = np.clip(np.round((mu + s * np.log(u / (1 - u)) + 1) * (K - 1) / 2), 0, K - 1).astype(np.int64)
  x[0, :4] = [0, K - 1, 1, K - 2]
  x[1, 0] = 12345  # typically far from every component
  out, bits = _round_trip(model, params, x, per_item)
  np.testing.assert_array_equal(out, x)
  code = model.code_bits(params, x).sum()
  assert code <= bits <= code + 64 * (B if per_item else 1)


def test_mixture_splits_cost_matches_model_nll():
  """On values drawn from the model the coder's bits are within 0.5% of the model's float64 NLL."""
  rng = np.random.default_rng(2)
  K, M = 1 << 16, 10
  params = mixture_params(rng, (1, 2000), M, spread=0.5)
  model = entropy_models.MixtureSplits(K, M)
  # Draw x from the discretised mixture itself by inverting F through the same splits (uniform decisions).
  walk = entropy_models._SplitWalk(model, params[0])
  while (nxt := walk.next_round()) is not None:
    rows, mid, f_mid, weights = nxt
    walk.decide(rows, mid, f_mid, rng.uniform(size=len(rows)) * (weights.sum(1)) >= weights[:, 0])
  x = walk.lo[None]
  code, nll = model.code_bits(params, x).sum(), model.model_bits(params, x).sum()
  assert abs(code - nll) <= 0.005 * nll, (code, nll)


@pytest.mark.parametrize("chunk", [entropy_models.CHUNK_ENTRIES, 3 * 65536])
def test_k65536_tables_are_coded_in_chunks_without_changing_a_bit(chunk, monkeypatch):
  D, B, K = 8, 2, 1 << 16
  predict = toy_predict(D, K, seed=3, scale=8.0, H=4)
  rng = np.random.default_rng(0)
  x = np.stack([items("walk", 1, D, K, rng)[0], rng.integers(0, K, D)]).astype(np.int32)
  sigma = orders.order_from_seed(1, D)
  reference = (walk.encode_stream(predict, x, sigma, [0, 3], K), walk.encode_items(predict, x, sigma, [0, 3], K))
  monkeypatch.setattr(entropy_models, "CHUNK_ENTRIES", chunk)
  assert walk.encode_stream(predict, x, sigma, [0, 3], K) == reference[0]
  assert walk.encode_items(predict, x, sigma, [0, 3], K) == reference[1]
  np.testing.assert_array_equal(walk.decode_stream(predict, reference[0], sigma, [0, 3], B, D, K), x)
  np.testing.assert_array_equal(walk.decode_items(predict, reference[1], sigma, [0, 3], B, D, K), x)
