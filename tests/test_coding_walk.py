"""The coding walk: exact round trips over every policy, the calls and inputs the network sees, and the rate
against the quantised NLL, for plain and upscale (multi-stage) models."""

import ast
import importlib
import inspect
import pkgutil
import types

from conftest import digit_stages, items, quantised_nll_bits, toy_predict, toy_stage_predict
import numpy as np
import pytest

import ardm_jax.coding
from ardm_jax.coding import container, orders, walk


class Recorder:
  """Counts network calls and keeps copies of what the network saw."""

  def __init__(self, fn):
    self.fn, self.calls = fn, []

  def __call__(self, x, known, t):
    self.calls.append((x.copy(), known.copy(), t))
    return self.fn(x, known, t)


def policies(D, rng):
  inner = np.sort(rng.choice(np.arange(1, D), size=D // 3, replace=False))
  return {
    "sequential": np.arange(D),
    "one_call": np.array([0]),
    "even": np.arange(0, D, 5),
    "random": np.concatenate([[0], inner]),
  }


def stage_policies(S, D, rng):
  inner = [np.sort(rng.choice(np.arange(1, D), size=D // 4, replace=False)) + s * D for s in range(S)]
  rand = np.sort(np.concatenate([np.arange(S) * D] + inner))
  return {"sequential": np.arange(S * D), "one_per_stage": np.arange(S) * D, "random": rand}


@pytest.mark.parametrize("K", [2, 17, 256])
def test_round_trip_both_modes_all_policies(K):
  D, B = 24, 3
  rng = np.random.default_rng(K)
  predict = toy_predict(D, K, seed=K)
  sigma = orders.order_from_seed(7, D)
  for pname, policy in policies(D, rng).items():
    for kind in ("zeros", "max", "uniform", "walk"):
      x = items(kind, B, D, K, rng)
      for enc, dec in ((walk.encode_stream, walk.decode_stream), (walk.encode_items, walk.decode_items)):
        payload = enc(predict, x, sigma, policy, K)
        out = dec(predict, payload, sigma, policy, B, D, K)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, x, err_msg=f"{enc.__name__} K={K} {pname} {kind}")


def test_network_calls_and_inputs_match_between_encoder_and_decoder():
  D, B, K = 20, 4, 17
  rng = np.random.default_rng(0)
  predict = toy_predict(D, K)
  x = items("uniform", B, D, K, rng)
  sigma = orders.order_from_seed(3, D)
  policy = np.array([0, 1, 5, 6, 13])
  for enc, dec in ((walk.encode_stream, walk.decode_stream), (walk.encode_items, walk.decode_items)):
    e, d, n = Recorder(predict), Recorder(predict), Recorder(predict)
    payload = enc(e, x, sigma, policy, K)
    dec(d, payload, sigma, policy, B, D, K)
    quantised_nll_bits(n, x, sigma, policy, K)
    assert len(e.calls) == len(d.calls) == len(n.calls) == len(policy)
    for (xe, ke, te), (xd, kd, td) in zip(e.calls[::-1], d.calls):  # encoder walks backwards
      assert te == td
      np.testing.assert_array_equal(ke, kd)
      np.testing.assert_array_equal(ke, np.broadcast_to(sigma < te, (B, D)))
      np.testing.assert_array_equal(xe, xd)
      np.testing.assert_array_equal(xe, np.where(ke, x, K))  # unknowns hold the absorbing class
  # Conditioning matters for this toy model, so the checks above can fail.
  x_in, known, t = e.calls[0]
  x2 = x_in.copy()
  x2[0, np.argmax(known[0])] = (x2[0, np.argmax(known[0])] + 1) % K
  assert not np.array_equal(predict(x_in, known, t)[0], predict(x2, known, t)[0])


def test_rate_matches_quantised_nll():
  """payload bits <= 1.005 * sum(-log2 p_quantised) + 64 and >= sum(-log2 p_quantised) - 64, per stream."""
  D, B, K = 64, 64, 17
  rng = np.random.default_rng(1)
  predict = toy_predict(D, K, scale=4.0)
  x = items("walk", B, D, K, rng)
  sigma = orders.order_from_seed(0, D)
  policy = np.arange(0, D, 4)
  nll_B = quantised_nll_bits(predict, x, sigma, policy, K)
  assert nll_B.shape == (B,) and np.all(nll_B > 0)
  stream = 8 * len(walk.encode_stream(predict, x, sigma, policy, K))
  assert nll_B.sum() - 64 <= stream <= 1.005 * nll_B.sum() + 64, (stream, nll_B.sum())
  per_item = 8 * np.array([len(p) for p in walk.encode_items(predict, x, sigma, policy, K)])
  assert np.all(per_item <= 1.005 * nll_B + 64) and np.all(per_item >= nll_B - 64), per_item - nll_B
  print(
    f"\nNLL {nll_B.sum():.1f} bits; one stream {stream} bits (+{stream - nll_B.sum():.1f}); "
    f"per item mean excess {np.mean(per_item - nll_B):.1f} bits (max {np.max(per_item - nll_B):.1f})"
  )


def test_bad_arguments_are_value_errors():
  D, K = 8, 5
  predict = toy_predict(D, K)
  x = np.zeros((2, D), np.int32)
  sigma = orders.order_from_seed(0, D)
  with pytest.raises(ValueError, match="policy"):
    walk.encode_stream(predict, x, sigma, [1, 2], K)
  with pytest.raises(ValueError, match="permutation"):
    walk.encode_stream(predict, x, np.zeros(D, np.int32), [0], K)
  with pytest.raises(ValueError, match="values"):
    walk.encode_stream(predict, x + K, sigma, [0], K)
  with pytest.raises(ValueError, match="logits of shape"):
    walk.encode_stream(lambda *a: np.zeros((2, D, K + 1), np.float32), x, sigma, [0], K)


@pytest.mark.parametrize("K,b,augment", [(17, 4, False), (17, 2, True), (256, 16, False)])
def test_upscale_round_trip_both_modes_all_policies(K, b, augment):
  D, B = 12, 3
  stages = digit_stages(K, b, augment)
  S = stages.slots.shape[0]
  rng = np.random.default_rng(K + b)
  predict = toy_stage_predict(stages, D, seed=b)
  sigma = orders.stage_orders(7, D, S)
  for pname, policy in stage_policies(S, D, rng).items():
    for kind in ("zeros", "max", "uniform", "walk"):
      x = items(kind, B, D, K, rng)
      for enc, dec in ((walk.encode_stream, walk.decode_stream), (walk.encode_items, walk.decode_items)):
        payload = enc(predict, x, sigma, policy, K, stages)
        out = dec(predict, payload, sigma, policy, B, D, K, stages)
        np.testing.assert_array_equal(out, x, err_msg=f"{enc.__name__} K={K} b={b} {pname} {kind}")


def test_upscale_network_inputs_are_the_stage_states():
  D, B, K = 10, 3, 17
  stages = digit_stages(K, 4)
  S = 3
  predict = toy_stage_predict(stages, D)
  x = items("uniform", B, D, K, np.random.default_rng(0))
  sigma = orders.stage_orders(3, D, S)
  policy = np.array([0, 4, 10, 11, 17, 20, 29])
  e, d = Recorder(predict), Recorder(predict)
  payload = walk.encode_stream(e, x, sigma, policy, K, stages)
  walk.decode_stream(d, payload, sigma, policy, B, D, K, stages)
  assert len(e.calls) == len(d.calls) == len(policy)
  for (xe, ke, te), (xd, kd, td), g in zip(e.calls[::-1], d.calls, policy):
    s, t = g // D, g % D
    assert te == td == g  # the network gets the global step s * D + t
    np.testing.assert_array_equal(ke, kd)
    np.testing.assert_array_equal(ke, np.broadcast_to(sigma[s] < t, (B, D)))
    np.testing.assert_array_equal(xe, xd)
    np.testing.assert_array_equal(xe, np.where(ke, stages.levels[s + 1][x], stages.levels[s][x]))
  nll = quantised_nll_bits(predict, x, sigma, policy, K, stages)
  assert nll.shape == (B,) and np.all(nll > 0)
  assert nll.sum() - 64 <= 8 * len(payload) <= 1.005 * nll.sum() + 64


def test_upscale_policies_and_stages_are_checked():
  D, K = 8, 17
  stages = digit_stages(K, 4)
  x = np.zeros((2, D), np.int32)
  predict = toy_stage_predict(stages, D)
  sigma = orders.stage_orders(0, D, 3)
  with pytest.raises(ValueError, match="stage start"):
    walk.encode_stream(predict, x, sigma, [0, 8], K, stages)
  with pytest.raises(ValueError, match="below S\\*D=24"):
    walk.encode_stream(predict, x, sigma, [0, 8, 16, 24], K, stages)
  with pytest.raises(ValueError, match="shape"):
    walk.encode_stream(predict, x, sigma[0], [0, 8, 16], K, stages)
  bad = types.SimpleNamespace(levels=stages.levels, slots=stages.slots % 2)  # two children share a slot
  with pytest.raises(ValueError, match="tree"):
    walk.encode_stream(predict, x, sigma, [0, 8, 16], K, bad)
  # The hash covers S * D and the global steps; the stage count itself is a header field of its own.
  assert container.policy_hash([0, 8, 16], D, 3) == container.policy_hash([0, 8, 16], 3 * D)
  # A stream that makes the decoder pick an empty slot is corrupt, never a wrong value.
  pick_empty = lambda x_in, known, t: np.tile(np.float32([0, 0, 0, 30]), x_in.shape + (1,))
  with pytest.raises(container.ContainerError, match="empty slot"):
    walk.decode_stream(pick_empty, b"\x01\x02\x03\x04\x05\x06\x07\x08", sigma, [0, 8, 16], 2, D, K, stages)


def test_encoder_starts_the_next_network_call_before_coding_a_step():
  """A predict with `dispatch` (as the model's Predictor) gets step k + 1 started before step k's result is
  taken, and the bytes equal those of the plain call."""
  D, K = 16, 17
  plain = toy_predict(D, K, seed=5)
  events = []

  class Dispatching:
    positions_only = True

    def dispatch(self, x, known, t, pos):
      events.append(("start", t))

      def result():
        events.append(("result", t))
        return plain(x, known, t)[:, pos]

      return result

  x = items("walk", 2, D, K, np.random.default_rng(2))
  sigma, policy = orders.order_from_seed(3, D), np.array([0, 3, 7, 12])
  assert walk.encode_items(Dispatching(), x, sigma, policy, K) == walk.encode_items(plain, x, sigma, policy, K)
  assert events[:3] == [("start", 12), ("start", 7), ("result", 12)]
  assert [e for e in events if e[0] == "result"] == [("result", t) for t in (12, 7, 3, 0)]


def test_no_pickle_and_no_jax():
  """Every module of the coder imports NumPy, constriction, a little of the standard library and its own modules:
  no JAX, no network, no pickle."""
  names = [info.name for info in pkgutil.iter_modules(ardm_jax.coding.__path__)]
  assert {"orders", "walk", "container", "packing", "entropy_models"} <= set(names)
  for name in [None, *names]:
    module = importlib.import_module("ardm_jax.coding" + (f".{name}" if name else ""))
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
      if isinstance(node, ast.Import):
        imported |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom):
        imported.add(node.module or "")
    own = {m for m in imported if m == "ardm_jax.coding" or m.startswith("ardm_jax.coding.")}
    assert imported - own <= {
      "__future__",
      "collections.abc",
      "dataclasses",
      "hashlib",
      "zlib",
      "typing",
      "constriction",
      "numpy",
    }, (module.__name__, imported)
