"""Entropy coder and container: exact round trips, rate vs the model's own NLL, and corruption handling."""

import ast
import hashlib
import inspect
import types

import constriction
import numpy as np
import pytest

from ardm_jax import coding, entropy_models

FP = "0123456789abcdef" * 4  # a full 64-hex-digit model fingerprint


def toy_predict(D, K, seed=0, scale=3.0, H=12):
  """Deterministic float32 logits that depend on every input value (absorbing K included), the mask and t."""
  r = np.random.default_rng(seed)
  E = r.normal(size=(K + 1, H))
  A = r.normal(size=(D, D)) / np.sqrt(D)
  M = r.normal(size=(D, H))
  P = r.normal(size=(D, H))
  T = 0.3 * r.normal(size=(D, H))
  W = scale * r.normal(size=(H, K)) / np.sqrt(H)

  def predict(x_BxD, known_BxD, t):
    assert x_BxD.dtype == np.int32 and known_BxD.dtype == bool and isinstance(t, int)
    f = np.einsum("ij,bjh->bih", A, E[x_BxD]) + known_BxD[..., None] * M[None] + P[None] + T[t][None, None]
    return (np.tanh(f) @ W).astype(np.float32)

  return predict


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


def items(kind, B, D, K, rng):
  if kind == "zeros":
    return np.zeros((B, D), np.int32)
  if kind == "max":
    return np.full((B, D), K - 1, np.int32)
  if kind == "uniform":
    return rng.integers(0, K, size=(B, D)).astype(np.int32)
  walk = np.cumsum(rng.integers(-1, 2, size=(B, D)), axis=1) + K // 2  # smooth, like image rows
  return np.clip(walk, 0, K - 1).astype(np.int32)


# ------------------------------------------------------------------------------------------------------------
# Probability tables


def splitmix64(seed, i):
  """Output i (0-based) of SplitMix64 seeded with `seed`, in plain Python integers: an independent check of the
  NumPy version the container format uses for orders."""
  mask = (1 << 64) - 1
  z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
  return z ^ (z >> 31)


@pytest.mark.parametrize("K", [2, 17, 256, 65536])
def test_quantise_counts_are_exact_and_floored(K):
  rng = np.random.default_rng(K)
  scales = np.array([0.1, 1, 5, 30, 100, 1e3, 1e30, 1e38])[:, None]
  logits = np.clip(rng.normal(size=(8, K)) * scales, -3e38, 3e38).astype(np.float32)
  logits[1, : K // 2] = -np.inf
  logits[2, 0] = np.inf
  counts = coding.quantise_counts(logits)
  assert counts.dtype == np.int64 and counts.shape == (8, K)
  assert counts.min() >= 1
  assert np.all(counts.sum(-1) == 1 << 24)
  np.testing.assert_array_equal(counts, coding.quantise_counts(logits.copy()))
  for i in range(8):  # a row's table does not depend on the rows around it
    np.testing.assert_array_equal(counts[i], coding.quantise_counts(logits[i]))
  probs = coding.quantise_probs(logits)
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
  np.testing.assert_array_equal(coding.quantise_counts(all_ninf), [[(1 << 24) // 5 + 1] + [(1 << 24) // 5] * 4])
  ties = np.zeros((1, 3), np.float32)  # residual goes to the first of the tied classes
  c = coding.quantise_counts(ties)
  assert c[0, 0] >= c[0, 1] == c[0, 2]
  probs = coding.quantise_counts(np.array([0.0, 1.0, 3.0]), from_probs=True)
  assert probs.sum() == 1 << 24 and probs[0] == 1
  with pytest.raises(ValueError, match="NaN"):
    coding.quantise_counts(np.array([0.0, np.nan], np.float32))
  with pytest.raises(ValueError, match="float"):
    coding.quantise_counts(np.array([1, 2]))
  with pytest.raises(ValueError, match="2 classes"):
    coding.quantise_counts(np.zeros((3, 1), np.float32))
  with pytest.raises(ValueError, match="non-negative"):
    coding.quantise_counts(np.array([-1.0, 2.0]), from_probs=True)


def test_constriction_uses_our_table_exactly():
  """Probes the decoder at every interval edge: symbol i owns exactly [cum_i, cum_i + count_i)."""
  fam = constriction.stream.model.Categorical(perfect=False)
  rng = np.random.default_rng(0)
  for K in (2, 17, 300):
    counts = coding.quantise_counts((rng.normal(size=(1, K)) * 8).astype(np.float32))
    cum = np.concatenate([[0], np.cumsum(counts[0])])
    weights = entropy_models.coder_weights(counts)
    for i in range(K):
      for q in (cum[i], cum[i + 1] - 1):
        if q > 0:  # a stream never ends in a zero word
          got = constriction.stream.stack.AnsCoder(np.array([q], np.uint32)).decode(fam, weights)[0]
          assert got == i, (K, i, q)


# ------------------------------------------------------------------------------------------------------------
# Orders


def test_order_from_seed():
  s = coding.order_from_seed(0, 10)
  assert s.dtype == np.int32
  np.testing.assert_array_equal(np.sort(s), np.arange(10))
  np.testing.assert_array_equal(s, coding.order_from_seed(0, 10))
  # Golden value: the order is part of the file format. Update only together with FORMAT_VERSION.
  np.testing.assert_array_equal(s, [7, 5, 0, 9, 1, 4, 2, 6, 3, 8])
  # The same ranks from a plain-integer SplitMix64, written independently of the NumPy version.
  for seed, D in ((0, 10), (12345, 37), (2**64 - 1, 9)):
    keys = [splitmix64(seed, i) for i in range(D)]
    ranks = {i: r for r, i in enumerate(sorted(range(D), key=keys.__getitem__))}
    np.testing.assert_array_equal(coding.order_from_seed(seed, D), [ranks[i] for i in range(D)])
  assert not np.array_equal(s, coding.order_from_seed(1, 10))
  assert coding.order_from_seed(2**64 - 1, 5).shape == (5,)
  with pytest.raises(ValueError, match="seed"):
    coding.order_from_seed(-1, 5)


# ------------------------------------------------------------------------------------------------------------
# Coding walk


@pytest.mark.parametrize("K", [2, 17, 256])
def test_round_trip_both_modes_all_policies(K):
  D, B = 24, 3
  rng = np.random.default_rng(K)
  predict = toy_predict(D, K, seed=K)
  sigma = coding.order_from_seed(7, D)
  for pname, policy in policies(D, rng).items():
    for kind in ("zeros", "max", "uniform", "walk"):
      x = items(kind, B, D, K, rng)
      for enc, dec in ((coding.encode_stream, coding.decode_stream), (coding.encode_items, coding.decode_items)):
        payload = enc(predict, x, sigma, policy, K)
        out = dec(predict, payload, sigma, policy, B, D, K)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, x, err_msg=f"{enc.__name__} K={K} {pname} {kind}")


def test_network_calls_and_inputs_match_between_encoder_and_decoder():
  D, B, K = 20, 4, 17
  rng = np.random.default_rng(0)
  predict = toy_predict(D, K)
  x = items("uniform", B, D, K, rng)
  sigma = coding.order_from_seed(3, D)
  policy = np.array([0, 1, 5, 6, 13])
  for enc, dec in ((coding.encode_stream, coding.decode_stream), (coding.encode_items, coding.decode_items)):
    e, d, n = Recorder(predict), Recorder(predict), Recorder(predict)
    payload = enc(e, x, sigma, policy, K)
    dec(d, payload, sigma, policy, B, D, K)
    coding.nll_bits(n, x, sigma, policy, K)
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
  sigma = coding.order_from_seed(0, D)
  policy = np.arange(0, D, 4)
  nll_B = coding.nll_bits(predict, x, sigma, policy, K)
  assert nll_B.shape == (B,) and np.all(nll_B > 0)
  stream = 8 * len(coding.encode_stream(predict, x, sigma, policy, K))
  assert nll_B.sum() - 64 <= stream <= 1.005 * nll_B.sum() + 64, (stream, nll_B.sum())
  per_item = 8 * np.array([len(p) for p in coding.encode_items(predict, x, sigma, policy, K)])
  assert np.all(per_item <= 1.005 * nll_B + 64) and np.all(per_item >= nll_B - 64), per_item - nll_B
  print(
    f"\nNLL {nll_B.sum():.1f} bits; one stream {stream} bits (+{stream - nll_B.sum():.1f}); "
    f"per item mean excess {np.mean(per_item - nll_B):.1f} bits (max {np.max(per_item - nll_B):.1f})"
  )


def test_bad_arguments_are_value_errors():
  D, K = 8, 5
  predict = toy_predict(D, K)
  x = np.zeros((2, D), np.int32)
  sigma = coding.order_from_seed(0, D)
  with pytest.raises(ValueError, match="policy"):
    coding.encode_stream(predict, x, sigma, [1, 2], K)
  with pytest.raises(ValueError, match="permutation"):
    coding.encode_stream(predict, x, np.zeros(D, np.int32), [0], K)
  with pytest.raises(ValueError, match="values"):
    coding.encode_stream(predict, x + K, sigma, [0], K)
  with pytest.raises(ValueError, match="logits of shape"):
    coding.encode_stream(lambda *a: np.zeros((2, D, K + 1), np.float32), x, sigma, [0], K)


# ------------------------------------------------------------------------------------------------------------
# Container


def small_files():
  D, B, K = 16, 3, 17
  predict = toy_predict(D, K, seed=5)
  x = items("walk", B, D, K, np.random.default_rng(2)).reshape(B, 4, 4, 1)
  policy = np.array([0, 3, 7, 12])
  files = {
    mode: coding.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=11, num_classes=K
    )
    for mode in coding.MODES
  }
  return predict, x, policy, K, files


def decode(data, predict, policy, K, fingerprint=FP):
  def lookup(budget, D):
    if budget != len(policy):
      raise coding.ContainerError(f"no policy for budget {budget}")
    return policy

  return coding.decompress(data, predict, expected_fingerprint=fingerprint, policy=lookup, num_classes=K)


def test_container_round_trip_and_header():
  predict, x, policy, K, files = small_files()
  for mode, data in files.items():
    c, out = decode(data, predict, policy, K)
    np.testing.assert_array_equal(out, x)
    assert (c.version, c.mode, c.kind, c.item_shape, c.num_items, c.budget, c.order_seed) == (
      1,
      mode,
      "image",
      (4, 4, 1),
      3,
      4,
      11,
    )
    assert c.fingerprint == FP[:8] and c.policy_hash == coding.policy_hash(policy, 16)
    assert len(c.payloads) == (1 if mode == "dataset" else 3)
    assert data.startswith(coding.MAGIC)
    assert len(data) == len(c.header) + sum(4 + 1 + len(p) for p in c.payloads)


def test_single_digits_image_overhead_is_24_bytes():
  D, K = 64, 17
  predict = toy_predict(D, K)
  x = items("walk", 1, D, K, np.random.default_rng(0)).reshape(1, 8, 8, 1)
  policy = np.arange(0, D, 3)
  data = coding.compress(
    predict, x, mode="item", fingerprint=FP, kind="image", policy=policy, order_seed=0, num_classes=K
  )
  c = coding.unpack_container(data, expected_fingerprint=FP)
  assert len(c.header) == 19 and len(data) - len(c.payloads[0]) == 24


def test_container_rejects_bad_files_with_clear_errors():
  predict, x, policy, K, files = small_files()
  data = files["item"]
  cases = {
    "bad magic": b"XX" + data[2:],
    "unsupported container version": data[:2] + b"\x03" + data[3:],
    "fingerprint mismatch": None,
    "trailing garbage": data + b"\x00",
    "empty file": b"",
  }
  for msg, bad in cases.items():
    with pytest.raises(coding.ContainerError, match=msg):
      if bad is None:
        decode(data, predict, policy, K, fingerprint="ff" * 32)
      else:
        decode(bad, predict, policy, K)
  with pytest.raises(coding.ContainerError, match="policy mismatch"):
    coding.decompress(data, predict, expected_fingerprint=FP, policy=[0, 3, 7, 13], num_classes=K)
  with pytest.raises(coding.ContainerError, match="item shape"):
    coding.unpack_container(data, expected_fingerprint=FP, expected_shape=(16,))
  for data in files.values():
    for n in range(len(data)):
      with pytest.raises(coding.ContainerError):
        decode(data[:n], predict, policy, K)


def test_absurd_sizes_fail_fast():
  for mode_bit in (0, 1):
    v = coding.varint_bytes
    header = (
      coding.MAGIC + bytes([1, mode_bit]) + bytes.fromhex(FP[:8]) + v(1) + v(16) + v(10**12) + v(4) + b"\0" * 4 + v(0)
    )
    with pytest.raises(coding.ContainerError, match="implausible"):
      coding.unpack_container(header + b"\0" * 5, expected_fingerprint=FP)
  with pytest.raises(coding.ContainerError, match="implausible"):
    coding.decode_stream(toy_predict(4, 3), b"", np.arange(4), [0], 10**12, 4, 3)


def test_crc_catches_wrong_data():
  predict, x, policy, K, files = small_files()
  for data in files.values():
    c = coding.unpack_container(data, expected_fingerprint=FP)
    flat = x.reshape(3, -1).copy()
    coding.check_crc(c, flat, K)
    flat[1, 5] = (flat[1, 5] + 1) % K
    with pytest.raises(coding.ContainerError, match="CRC mismatch"):
      coding.check_crc(c, flat, K)


def fuzz_files(cases, trials: int, seed: int) -> dict:
  """Damages `trials` copies of the (data, x, decode_fn) cases in turn (1-5 bytes flipped or changed); each must be
  refused with a ContainerError or decode to exactly x."""
  rng = np.random.default_rng(seed)
  outcome = {"error": 0, "exact": 0, "caught_by_crc": 0}
  for trial in range(trials):
    original, x, decode_fn = cases[trial % len(cases)]
    data = bytearray(original)
    for pos in rng.choice(len(data), size=min(len(data), rng.choice([1, 1, 2, 3, 5])), replace=False):
      if rng.random() < 0.5:
        data[pos] ^= 1 << int(rng.integers(8))
      else:
        data[pos] = (data[pos] + int(rng.integers(1, 256))) % 256
    try:
      out = decode_fn(bytes(data))
    except coding.ContainerError as e:
      outcome["error"] += 1
      outcome["caught_by_crc"] += "CRC mismatch" in str(e)
      continue
    assert np.array_equal(out, x), f"silent wrong output for trial {trial}"
    outcome["exact"] += 1
  assert outcome["error"] + outcome["exact"] == trials
  assert outcome["caught_by_crc"] > 0  # the last line of defence is exercised, not just the parser
  return outcome


def test_fuzzed_files_never_decode_to_wrong_data():
  predict, x, policy, K, files = small_files()
  outcome = fuzz_files(
    [(files[mode], x, lambda d: decode(d, predict, policy, K)[1]) for mode in coding.MODES], 2400, seed=123
  )
  print(f"\nfuzz: {outcome} (silent wrong outputs: 0)")


def test_crc_catches_a_valid_stream_of_other_items():
  """A spliced-in, perfectly decodable payload yields wrong items; only the CRC can tell."""
  predict, x, policy, K, files = small_files()
  x_other = (x + 1) % K
  flat, flat_other = x.reshape(3, -1), x_other.reshape(3, -1)
  sigma = coding.order_from_seed(11, 16)
  for mode in coding.MODES:
    enc = coding.encode_stream if mode == "dataset" else coding.encode_items
    payloads = enc(predict, flat_other, sigma, policy, K)
    payloads = [payloads] if mode == "dataset" else payloads
    forged = coding.pack_container(
      payloads,
      flat,
      mode=mode,
      fingerprint=FP,
      kind="image",
      item_shape=(4, 4, 1),
      policy=policy,
      order_seed=11,
      num_classes=K,
    )
    with pytest.raises(coding.ContainerError, match="CRC mismatch"):
      decode(forged, predict, policy, K)


def test_other_network_numerics_are_caught():
  predict, x, policy, K, files = small_files()
  other = toy_predict(16, K, seed=6)  # same fingerprint claimed, different logits
  for data in files.values():
    with pytest.raises(coding.ContainerError):
      decode(data, other, policy, K)


def test_one_stage_files_are_byte_identical_to_version_1():
  """Golden digests of files written before upscale coding existed: one-stage files must never change."""
  predict, x, policy, K, files = small_files()
  golden = {"item": (78, "5c093a122c85ac55"), "dataset": (62, "74e68ec9c864baaa")}
  for mode, data in files.items():
    assert (len(data), hashlib.sha256(data).hexdigest()[:16]) == golden[mode], mode
    assert data[2] == 1
  # The same model written as a one-stage transition (absorbing class K, slots = classes) gives the same bytes.
  single = types.SimpleNamespace(levels=np.stack([np.full(K, K), np.arange(K)]), slots=np.arange(K)[None])
  for mode, data in files.items():
    again = coding.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=11, num_classes=K, stages=single
    )
    assert again == data
    _, out = coding.decompress(data, predict, expected_fingerprint=FP, policy=policy, num_classes=K, stages=single)
    np.testing.assert_array_equal(out, x)


# ------------------------------------------------------------------------------------------------------------
# Upscale (multi-stage) coding


def digit_stages(K, b, augment=False):
  """Base-b digit transitions in NumPy (as ardm_jax.upscale builds them): stage s codes digit S-1-s."""
  S, cap = 0, 1
  while cap < K:
    cap, S = cap * b, S + 1
  k = np.arange(K)
  levels = np.stack([(k // b ** (S - l)) * b ** (S - l) for l in range(S + 1)])
  if augment:  # every level its own ids: data first, the absorbing state last
    offset = 0
    for l in range(S, -1, -1):
      prefix = k // b ** (S - l)
      levels[l] = offset + prefix
      offset += prefix.max() + 1
  slots = np.stack([(k // b ** (S - 1 - s)) % b for s in range(S)])
  return types.SimpleNamespace(levels=levels, slots=slots)


def toy_stage_predict(stages, D, seed=0, scale=3.0, H=12):
  """Slot logits [B, D, C] that depend on every input state, the mask and the global step; -inf on the empty
  slots of each variable's state (as upscale.slot_log_probs gives them)."""
  levels, slots = stages.levels, stages.slots
  S, C, N = slots.shape[0], slots.max() + 1, levels.max() + 1
  valid = np.zeros((S, N, C), bool)
  for s in range(S):
    valid[s, levels[s], slots[s]] = True
  r = np.random.default_rng(seed)
  E, A = r.normal(size=(N, H)), r.normal(size=(D, D)) / np.sqrt(D)
  M, T = r.normal(size=(D, H)), 0.3 * r.normal(size=(S * D, H))
  W = scale * r.normal(size=(H, C)) / np.sqrt(H)

  def predict(x_BxD, known_BxD, t):
    assert x_BxD.dtype == np.int32 and known_BxD.dtype == bool and isinstance(t, int)
    f = np.einsum("ij,bjh->bih", A, E[x_BxD]) + known_BxD[..., None] * M[None] + T[t][None, None]
    logits = (np.tanh(f) @ W).astype(np.float32)
    return np.where(valid[t // D][x_BxD], logits, -np.inf).astype(np.float32)

  return predict


def stage_policies(S, D, rng):
  inner = [np.sort(rng.choice(np.arange(1, D), size=D // 4, replace=False)) + s * D for s in range(S)]
  rand = np.sort(np.concatenate([np.arange(S) * D] + inner))
  return {"sequential": np.arange(S * D), "one_per_stage": np.arange(S) * D, "random": rand}


@pytest.mark.parametrize("K,b,augment", [(17, 4, False), (17, 2, True), (256, 16, False)])
def test_upscale_round_trip_both_modes_all_policies(K, b, augment):
  D, B = 12, 3
  stages = digit_stages(K, b, augment)
  S = stages.slots.shape[0]
  rng = np.random.default_rng(K + b)
  predict = toy_stage_predict(stages, D, seed=b)
  sigma = coding.stage_orders(7, D, S)
  for pname, policy in stage_policies(S, D, rng).items():
    for kind in ("zeros", "max", "uniform", "walk"):
      x = items(kind, B, D, K, rng)
      for enc, dec in ((coding.encode_stream, coding.decode_stream), (coding.encode_items, coding.decode_items)):
        payload = enc(predict, x, sigma, policy, K, stages)
        out = dec(predict, payload, sigma, policy, B, D, K, stages)
        np.testing.assert_array_equal(out, x, err_msg=f"{enc.__name__} K={K} b={b} {pname} {kind}")


def test_upscale_network_inputs_are_the_stage_states():
  D, B, K = 10, 3, 17
  stages = digit_stages(K, 4)
  S = 3
  predict = toy_stage_predict(stages, D)
  x = items("uniform", B, D, K, np.random.default_rng(0))
  sigma = coding.stage_orders(3, D, S)
  policy = np.array([0, 4, 10, 11, 17, 20, 29])
  e, d = Recorder(predict), Recorder(predict)
  payload = coding.encode_stream(e, x, sigma, policy, K, stages)
  coding.decode_stream(d, payload, sigma, policy, B, D, K, stages)
  assert len(e.calls) == len(d.calls) == len(policy)
  for (xe, ke, te), (xd, kd, td), g in zip(e.calls[::-1], d.calls, policy):
    s, t = g // D, g % D
    assert te == td == g  # the network gets the global step s * D + t
    np.testing.assert_array_equal(ke, kd)
    np.testing.assert_array_equal(ke, np.broadcast_to(sigma[s] < t, (B, D)))
    np.testing.assert_array_equal(xe, xd)
    np.testing.assert_array_equal(xe, np.where(ke, stages.levels[s + 1][x], stages.levels[s][x]))
  nll = coding.nll_bits(predict, x, sigma, policy, K, stages)
  assert nll.shape == (B,) and np.all(nll > 0)
  assert nll.sum() - 64 <= 8 * len(payload) <= 1.005 * nll.sum() + 64


def test_stage_orders():
  o = coding.stage_orders(5, 9, 3)
  assert o.shape == (3, 9) and o.dtype == np.int32
  np.testing.assert_array_equal(o[0], coding.order_from_seed(5, 9))
  for s in range(3):
    np.testing.assert_array_equal(np.sort(o[s]), np.arange(9))
  assert not np.array_equal(o[1], o[0]) and not np.array_equal(o[2], o[1])
  # Golden value: stage s ranks SplitMix64 outputs s*D+1 .. (s+1)*D of the seed's stream (file format).
  np.testing.assert_array_equal(coding.stage_orders(0, 5, 2)[0], coding.order_from_seed(0, 5))

  keys = [splitmix64(5, 9 + i) for i in range(9)]
  ranks = {i: r for r, i in enumerate(sorted(range(9), key=keys.__getitem__))}
  np.testing.assert_array_equal(o[1], [ranks[i] for i in range(9)])


def test_upscale_policies_and_stages_are_checked():
  D, K = 8, 17
  stages = digit_stages(K, 4)
  x = np.zeros((2, D), np.int32)
  predict = toy_stage_predict(stages, D)
  sigma = coding.stage_orders(0, D, 3)
  with pytest.raises(ValueError, match="stage start"):
    coding.encode_stream(predict, x, sigma, [0, 8], K, stages)
  with pytest.raises(ValueError, match="below S\\*D=24"):
    coding.encode_stream(predict, x, sigma, [0, 8, 16, 24], K, stages)
  with pytest.raises(ValueError, match="shape"):
    coding.encode_stream(predict, x, sigma[0], [0, 8, 16], K, stages)
  bad = types.SimpleNamespace(levels=stages.levels, slots=stages.slots % 2)  # two children share a slot
  with pytest.raises(ValueError, match="tree"):
    coding.encode_stream(predict, x, sigma, [0, 8, 16], K, bad)
  # The hash covers S * D and the global steps; the stage count itself is a header field of its own.
  assert coding.policy_hash([0, 8, 16], D, 3) == coding.policy_hash([0, 8, 16], 3 * D)
  # A stream that makes the decoder pick an empty slot is corrupt, never a wrong value.
  pick_empty = lambda x_in, known, t: np.tile(np.float32([0, 0, 0, 30]), x_in.shape + (1,))
  with pytest.raises(coding.ContainerError, match="empty slot"):
    coding.decode_stream(pick_empty, b"\x01\x02\x03\x04\x05\x06\x07\x08", sigma, [0, 8, 16], 2, D, K, stages)


def upscale_files():
  D, B, K = 16, 3, 17
  stages = digit_stages(K, 4)
  predict = toy_stage_predict(stages, D, seed=5)
  x = items("walk", B, D, K, np.random.default_rng(2)).reshape(B, 4, 4, 1)
  policy = np.array([0, 5, 16, 32, 40])
  files = {
    mode: coding.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=11, num_classes=K, stages=stages
    )
    for mode in coding.MODES
  }
  return predict, stages, x, policy, K, files


def test_upscale_container_is_version_2_with_the_stage_count():
  predict, stages, x, policy, K, files = upscale_files()
  for mode, data in files.items():
    c, out = coding.decompress(
      data, predict, expected_fingerprint=FP, policy=lambda b, D: policy, num_classes=K, stages=stages
    )
    np.testing.assert_array_equal(out, x)
    assert (c.version, c.num_stages, c.budget, c.D) == (2, 3, 5, 16)
    assert c.policy_hash == coding.policy_hash(policy, 16, 3)
    one_stage = coding.compress(
      toy_predict(16, K), x, mode=mode, fingerprint=FP, kind="image", policy=[0, 5], order_seed=11, num_classes=K
    )
    assert len(c.header) == len(coding.unpack_container(one_stage, expected_fingerprint=FP).header) + 1
    with pytest.raises(coding.ContainerError, match="stage mismatch"):
      coding.decompress(data, toy_predict(16, K), expected_fingerprint=FP, policy=policy, num_classes=K)
    with pytest.raises(coding.ContainerError, match="policy mismatch"):
      coding.decompress(data, predict, expected_fingerprint=FP, policy=[0, 5, 16, 32, 41], num_classes=K, stages=stages)
    for n in range(len(data)):
      with pytest.raises(coding.ContainerError):
        coding.decompress(data[:n], predict, expected_fingerprint=FP, policy=policy, num_classes=K, stages=stages)
  # A stage count of 1 or absurd ones in a version 2 header are corrupt.
  data = files["dataset"]
  c = coding.unpack_container(data, expected_fingerprint=FP)
  at = len(c.header) - len(coding.varint_bytes(11)) - 4 - 1 - 1  # stages varint sits before budget and the hash
  assert data[at] == 3
  for bad in (1, 0, 65, 127):
    with pytest.raises(coding.ContainerError, match="stage count"):
      coding.unpack_container(data[:at] + bytes([bad]) + data[at + 1 :], expected_fingerprint=FP)


def test_upscale_fuzzed_files_never_decode_to_wrong_data():
  predict, stages, x, policy, K, files = upscale_files()
  rng = np.random.default_rng(321)
  outcome = {"error": 0, "exact": 0, "crc": 0}
  originals = list(files.values())
  for trial in range(600):
    data = bytearray(originals[trial % 2])
    for pos in rng.choice(len(data), size=rng.choice([1, 1, 2, 3]), replace=False):
      data[pos] = (data[pos] + int(rng.integers(1, 256))) % 256
    try:
      _, out = coding.decompress(
        bytes(data), predict, expected_fingerprint=FP, policy=policy, num_classes=K, stages=stages
      )
    except coding.ContainerError as e:
      outcome["error"] += 1
      outcome["crc"] += "CRC mismatch" in str(e)
      continue
    assert np.array_equal(out, x), f"silent wrong output for trial {trial}"
    outcome["exact"] += 1
  print(f"\nupscale fuzz: {outcome} (silent wrong outputs: 0)")
  assert outcome["error"] > 0


@pytest.mark.parametrize("chunk", [coding.CHUNK_ENTRIES, 3 * 65536])
def test_k65536_tables_are_coded_in_chunks_without_changing_a_bit(chunk, monkeypatch):
  D, B, K = 8, 2, 1 << 16
  predict = toy_predict(D, K, seed=3, scale=8.0, H=4)
  rng = np.random.default_rng(0)
  x = np.stack([items("walk", 1, D, K, rng)[0], rng.integers(0, K, D)]).astype(np.int32)
  sigma = coding.order_from_seed(1, D)
  reference = (coding.encode_stream(predict, x, sigma, [0, 3], K), coding.encode_items(predict, x, sigma, [0, 3], K))
  monkeypatch.setattr(entropy_models, "CHUNK_ENTRIES", chunk)
  assert coding.encode_stream(predict, x, sigma, [0, 3], K) == reference[0]
  assert coding.encode_items(predict, x, sigma, [0, 3], K) == reference[1]
  np.testing.assert_array_equal(coding.decode_stream(predict, reference[0], sigma, [0, 3], B, D, K), x)
  np.testing.assert_array_equal(coding.decode_items(predict, reference[1], sigma, [0, 3], B, D, K), x)


def test_no_pickle_and_no_jax():
  for module in (coding, entropy_models):
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
      if isinstance(node, ast.Import):
        imported |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom):
        imported.add(node.module or "")
    assert imported <= {
      "__future__",
      "dataclasses",
      "hashlib",
      "zlib",
      "typing",
      "constriction",
      "numpy",
      "ardm_jax.entropy_models",
    }, (module.__name__, imported)


# ----------------------------------------------------------------------------------------------------------------
# Discretised logistic mixtures coded by binary splits (no K-wide tables)


def _mixture_params(rng, shape, M, spread=1.0):
  """Unpacked mixture parameters [..., 3M] as DiscretisedLogisticMixture.unpack returns them (float32)."""
  log_pi = rng.normal(size=shape + (M,)) * 2
  log_pi = log_pi - np.logaddexp.reduce(log_pi, axis=-1, keepdims=True)
  means = rng.uniform(-1, 1, size=shape + (M,)) * spread
  log_scales = rng.uniform(-7, 0, size=shape + (M,))
  return np.concatenate([log_pi, means, log_scales], axis=-1).astype(np.float32)


@pytest.mark.parametrize("K", [2, 3, 37, 256])
def test_mixture_splits_are_the_discretised_mixture(K):
  """Enumerating every value: the split probabilities multiply to the mixture's own bin masses (float32 reference
  from distributions.py), and the quantised splits form a complete code (Kraft sum exactly 1)."""
  import jax.numpy as jnp

  from ardm_jax.distributions import DiscretisedLogisticMixture

  rng = np.random.default_rng(K)
  M = 4
  params = _mixture_params(rng, (3,), M)
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


@pytest.mark.parametrize("per_item", [True, False])
def test_mixture_splits_round_trip_16_bit(per_item, monkeypatch):
  """65,536 classes, values drawn from the mixture plus both end bins and far tails; groups smaller than a
  step so the group order is exercised; the stream costs the split NLL plus at most a few words."""
  monkeypatch.setattr(entropy_models, "SPLIT_GROUP_ROWS", 7)
  rng = np.random.default_rng(1)
  K, M, B, n = 1 << 16, 30, 3, 40
  params = _mixture_params(rng, (B, n), M)
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
  params = _mixture_params(rng, (1, 2000), M, spread=0.5)
  model = entropy_models.MixtureSplits(K, M)
  # Draw x from the discretised mixture itself by inverting F through the same splits (uniform decisions).
  walk = entropy_models._SplitWalk(model, params[0])
  while (nxt := walk.next_round()) is not None:
    rows, mid, f_mid, weights = nxt
    walk.decide(rows, mid, f_mid, rng.uniform(size=len(rows)) * (weights.sum(1)) >= weights[:, 0])
  x = walk.lo[None]
  code, nll = model.code_bits(params, x).sum(), model.model_bits(params, x).sum()
  assert abs(code - nll) <= 0.005 * nll, (code, nll)


def test_mixture_files_decode_and_corruption_is_caught():
  """Through the coding walk: a 16-bit mixture model round-trips in both modes, the container says 'splits',
  decoding with the table scheme is refused, and a damaged payload is an error, never wrong data."""
  rng = np.random.default_rng(3)
  K, M, B, D = 1 << 16, 5, 2, 24
  table = _mixture_params(rng, (D, K // 4096), M)  # depends on the position and a coarse view of the input

  def predict(x, known, t, pos):
    del known, t
    return np.stack([table[pos, np.minimum(x[b, pos] // 4096, table.shape[1] - 1)] for b in range(len(x))])

  predict.positions_only = True
  x = rng.integers(0, K, (B, D))
  symbols = entropy_models.MixtureSplits(K, M)
  for mode in coding.MODES:
    data = coding.compress(
      predict,
      x,
      mode=mode,
      fingerprint="ab" * 8,
      kind="audio",
      policy=[0, 5, 11],
      order_seed=4,
      num_classes=K,
      symbols=symbols,
    )
    c, y = coding.decompress(
      data, predict, expected_fingerprint="ab" * 8, policy=[0, 5, 11], num_classes=K, symbols=symbols
    )
    assert c.symbols == "splits"
    np.testing.assert_array_equal(y, x)
    with pytest.raises(coding.ContainerError, match="coding scheme mismatch"):
      coding.decompress(data, predict, expected_fingerprint="ab" * 8, policy=[0, 5, 11], num_classes=K)
    bad = bytearray(data)
    bad[-3] ^= 0x10
    with pytest.raises(coding.ContainerError):
      coding.decompress(
        bytes(bad), predict, expected_fingerprint="ab" * 8, policy=[0, 5, 11], num_classes=K, symbols=symbols
      )


# ----------------------------------------------------------------------------------------------------------------
# Compact container (version 3)


def compact_files(num_items=3, policy=(0, 3, 7, 12), seed=11):
  D, K = 16, 17
  predict = toy_predict(D, K, seed=5)
  x = items("walk", num_items, D, K, np.random.default_rng(2)).reshape(num_items, 4, 4, 1)
  policy = np.array(policy)
  files = {
    mode: coding.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=seed, num_classes=K, compact=True
    )
    for mode in coding.MODES
  }
  return predict, x, policy, K, files


def decode_compact(data, predict, policy, K, fingerprint=FP, shape=(4, 4, 1)):
  return coding.decompress(
    data,
    predict,
    expected_fingerprint=fingerprint,
    policy=policy,
    num_classes=K,
    expected_shape=shape,
    max_symbols=4096,
  )  # a tight cap, as callers should pass


def test_compact_single_item_overhead_is_8_bytes_plus_the_ans_state():
  """One digits-sized item, default policy (one call per variable) and seed 0: magic, flags, 2 fingerprint bytes
  and a CRC, nothing else; with the ANS state under 12 bytes over the quantised NLL."""
  D, K = 64, 17
  predict = toy_predict(D, K, scale=4.0)
  overheads = []
  for i in range(20):
    x = items("walk", 1, D, K, np.random.default_rng(i)).reshape(1, 8, 8, 1)
    data = coding.compress(
      predict,
      x,
      mode="item",
      fingerprint=FP,
      kind="image",
      policy=np.arange(D),
      order_seed=0,
      num_classes=K,
      compact=True,
    )
    c = coding.unpack_container(data, expected_fingerprint=FP, expected_shape=(8, 8, 1))
    assert (c.version, len(c.header), len(data) - len(c.payloads[0])) == (3, 4, 8)
    nll = coding.nll_bits(predict, x.reshape(1, D), coding.order_from_seed(0, D), np.arange(D), K)[0]
    overheads.append(len(data) - nll / 8)
    np.testing.assert_array_equal(decode_compact(data, predict, np.arange(D), K, shape=(8, 8, 1))[1], x)
  print(
    f"\ncompact single item: mean overhead {np.mean(overheads):.2f} bytes over the NLL (max {np.max(overheads):.2f})"
  )
  assert np.mean(overheads) < 12


@pytest.mark.parametrize(
  "num_items,policy,seed", [(3, (0, 3, 7, 12), 11), (1, tuple(range(16)), 5), (2, tuple(range(16)), 0), (1, (0, 9), 0)]
)
def test_compact_round_trip_stores_only_what_differs(num_items, policy, seed):
  predict, x, policy, K, files = compact_files(num_items, policy, seed)
  for mode, data in files.items():
    c, out = decode_compact(data, predict, policy, K)
    np.testing.assert_array_equal(out, x)
    assert (c.version, c.mode, c.kind, c.item_shape, c.num_items, c.budget, c.order_seed) == (
      3,
      mode,
      "image",
      (4, 4, 1),
      num_items,
      len(policy),
      seed,
    )
    assert c.policy_hash == coding.policy_hash(policy, 16)
    stored = (seed != 0 or num_items != 1) + (num_items != 1) + 5 * (len(policy) != 16)  # 1-byte varints here
    assert len(c.header) == 4 + stored
  # The shape is stored when it is not the one the decoder is told to expect.
  data = coding.pack_container(
    [b"\x01"],
    x.reshape(num_items, -1)[:1],
    mode="item",
    fingerprint=FP,
    kind="image",
    item_shape=(16,),
    policy=policy,
    order_seed=0,
    num_classes=K,
    compact=True,
    implied_shape=(4, 4, 1),
  )
  assert coding.unpack_container(data, expected_fingerprint=FP).item_shape == (16,)
  with pytest.raises(coding.ContainerError, match="item shape"):
    coding.unpack_container(data, expected_fingerprint=FP, expected_shape=(4, 4, 1))


def test_compact_files_refuse_wrong_models_and_damage_with_one_line():
  predict, x, policy, K, files = compact_files()
  data = files["item"]
  with pytest.raises(coding.ContainerError, match="fingerprint mismatch"):
    decode_compact(data, predict, policy, K, fingerprint="ff" * 32)
  # Another model sharing the two stored fingerprint bytes: only the CRC (keyed by the whole fingerprint) knows.
  with pytest.raises(coding.ContainerError, match="CRC mismatch"):
    decode_compact(data, predict, policy, K, fingerprint=FP[:4] + "00" * 30)
  with pytest.raises(coding.ContainerError, match="policy mismatch"):
    decode_compact(data, predict, np.array([0, 3, 7, 13]), K)
  with pytest.raises(ValueError, match="expected_shape"):
    coding.unpack_container(data, expected_fingerprint=FP)
  with pytest.raises(coding.ContainerError, match="corrupt"):  # the last payload runs to the end of the file
    decode_compact(data + b"\x07", predict, policy, K)
  for blob in files.values():
    for n in range(len(blob)):
      with pytest.raises(coding.ContainerError):
        decode_compact(blob[:n], predict, policy, K)


def test_fuzzed_compact_files_never_decode_to_wrong_data():
  """4,000 damaged compact files (single and multi-item, both modes): each is refused or decodes exactly."""
  cases = []
  for predict, x, policy, K, files in (compact_files(), compact_files(1, tuple(range(16)), 0)):
    for mode in coding.MODES:
      cases.append((files[mode], x, lambda d, p=predict, s=policy, k=K: decode_compact(d, p, s, k)[1]))
  outcome = fuzz_files(cases, 4000, seed=321)
  print(f"\ncompact fuzz: {outcome} (silent wrong outputs: 0)")


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
  sigma, policy = coding.order_from_seed(3, D), np.array([0, 3, 7, 12])
  assert coding.encode_items(Dispatching(), x, sigma, policy, K) == coding.encode_items(plain, x, sigma, policy, K)
  assert events[:3] == [("start", 12), ("start", 7), ("result", 12)]
  assert [e for e in events if e[0] == "result"] == [("result", t) for t in (12, 7, 3, 0)]
