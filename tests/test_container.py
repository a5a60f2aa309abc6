"""The container: headers of every version, golden one-stage bytes, and corruption handling (every damaged file is
refused or decodes exactly, never to wrong data)."""

import hashlib
import types

from conftest import digit_stages, items, mixture_params, quantised_nll_bits, toy_predict, toy_stage_predict
import numpy as np
import pytest

from ardm_jax.coding import codec, container, entropy_models, orders, packing, walk

FP = "0123456789abcdef" * 4  # a full 64-hex-digit model fingerprint


def small_files():
  D, B, K = 16, 3, 17
  predict = toy_predict(D, K, seed=5)
  x = items("walk", B, D, K, np.random.default_rng(2)).reshape(B, 4, 4, 1)
  policy = np.array([0, 3, 7, 12])
  files = {
    mode: codec.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=11, num_classes=K
    )
    for mode in container.MODES
  }
  return predict, x, policy, K, files


def decode(data, predict, policy, K, fingerprint=FP):
  def lookup(budget, D):
    if budget != len(policy):
      raise container.ContainerError(f"no policy for budget {budget}")
    return policy

  return codec.decompress(data, predict, expected_fingerprint=fingerprint, policy=lookup, num_classes=K)


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
    except container.ContainerError as e:
      outcome["error"] += 1
      outcome["caught_by_crc"] += "CRC mismatch" in str(e)
      continue
    assert np.array_equal(out, x), f"silent wrong output for trial {trial}"
    outcome["exact"] += 1
  assert outcome["error"] + outcome["exact"] == trials
  assert outcome["caught_by_crc"] > 0  # the last line of defence is exercised, not just the parser
  return outcome


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
    assert c.fingerprint == FP[:8] and c.policy_hash == container.policy_hash(policy, 16)
    assert len(c.payloads) == (1 if mode == "dataset" else 3)
    assert data.startswith(container.MAGIC)
    assert len(data) == len(c.header) + sum(4 + 1 + len(p) for p in c.payloads)


def test_single_digits_image_overhead_is_24_bytes():
  D, K = 64, 17
  predict = toy_predict(D, K)
  x = items("walk", 1, D, K, np.random.default_rng(0)).reshape(1, 8, 8, 1)
  policy = np.arange(0, D, 3)
  data = codec.compress(
    predict, x, mode="item", fingerprint=FP, kind="image", policy=policy, order_seed=0, num_classes=K
  )
  c = packing.unpack_container(data, expected_fingerprint=FP)
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
    with pytest.raises(container.ContainerError, match=msg):
      if bad is None:
        decode(data, predict, policy, K, fingerprint="ff" * 32)
      else:
        decode(bad, predict, policy, K)
  with pytest.raises(container.ContainerError, match="policy mismatch"):
    codec.decompress(data, predict, expected_fingerprint=FP, policy=[0, 3, 7, 13], num_classes=K)
  with pytest.raises(container.ContainerError, match="item shape"):
    packing.unpack_container(data, expected_fingerprint=FP, expected_shape=(16,))
  for data in files.values():
    for n in range(len(data)):
      with pytest.raises(container.ContainerError):
        decode(data[:n], predict, policy, K)


def test_absurd_sizes_fail_fast():
  for mode_bit in (0, 1):
    v = container.varint_bytes
    header = (
      container.MAGIC
      + bytes([1, mode_bit])
      + bytes.fromhex(FP[:8])
      + v(1)
      + v(16)
      + v(10**12)
      + v(4)
      + b"\0" * 4
      + v(0)
    )
    with pytest.raises(container.ContainerError, match="implausible"):
      packing.unpack_container(header + b"\0" * 5, expected_fingerprint=FP)
  with pytest.raises(container.ContainerError, match="implausible"):
    walk.decode_stream(toy_predict(4, 3), b"", np.arange(4), [0], 10**12, 4, 3)


def test_crc_catches_wrong_data():
  predict, x, policy, K, files = small_files()
  for data in files.values():
    c = packing.unpack_container(data, expected_fingerprint=FP)
    flat = x.reshape(3, -1).copy()
    container.check_crc(c, flat, K)
    flat[1, 5] = (flat[1, 5] + 1) % K
    with pytest.raises(container.ContainerError, match="CRC mismatch"):
      container.check_crc(c, flat, K)


def test_fuzzed_files_never_decode_to_wrong_data():
  predict, x, policy, K, files = small_files()
  outcome = fuzz_files(
    [(files[mode], x, lambda d: decode(d, predict, policy, K)[1]) for mode in container.MODES], 2400, seed=123
  )
  print(f"\nfuzz: {outcome} (silent wrong outputs: 0)")


def test_crc_catches_a_valid_stream_of_other_items():
  """A spliced-in, perfectly decodable payload yields wrong items; only the CRC can tell."""
  predict, x, policy, K, files = small_files()
  x_other = (x + 1) % K
  flat, flat_other = x.reshape(3, -1), x_other.reshape(3, -1)
  sigma = orders.order_from_seed(11, 16)
  for mode in container.MODES:
    enc = walk.encode_stream if mode == "dataset" else walk.encode_items
    payloads = enc(predict, flat_other, sigma, policy, K)
    payloads = [payloads] if mode == "dataset" else payloads
    forged = packing.pack_container(
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
    with pytest.raises(container.ContainerError, match="CRC mismatch"):
      decode(forged, predict, policy, K)


def test_other_network_numerics_are_caught():
  predict, x, policy, K, files = small_files()
  other = toy_predict(16, K, seed=6)  # same fingerprint claimed, different logits
  for data in files.values():
    with pytest.raises(container.ContainerError):
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
    again = codec.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=11, num_classes=K, stages=single
    )
    assert again == data
    _, out = codec.decompress(data, predict, expected_fingerprint=FP, policy=policy, num_classes=K, stages=single)
    np.testing.assert_array_equal(out, x)


def upscale_files():
  D, B, K = 16, 3, 17
  stages = digit_stages(K, 4)
  predict = toy_stage_predict(stages, D, seed=5)
  x = items("walk", B, D, K, np.random.default_rng(2)).reshape(B, 4, 4, 1)
  policy = np.array([0, 5, 16, 32, 40])
  files = {
    mode: codec.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=11, num_classes=K, stages=stages
    )
    for mode in container.MODES
  }
  return predict, stages, x, policy, K, files


def test_upscale_container_is_version_2_with_the_stage_count():
  predict, stages, x, policy, K, files = upscale_files()
  for mode, data in files.items():
    c, out = codec.decompress(
      data, predict, expected_fingerprint=FP, policy=lambda b, D: policy, num_classes=K, stages=stages
    )
    np.testing.assert_array_equal(out, x)
    assert (c.version, c.num_stages, c.budget, c.D) == (2, 3, 5, 16)
    assert c.policy_hash == container.policy_hash(policy, 16, 3)
    one_stage = codec.compress(
      toy_predict(16, K), x, mode=mode, fingerprint=FP, kind="image", policy=[0, 5], order_seed=11, num_classes=K
    )
    assert len(c.header) == len(packing.unpack_container(one_stage, expected_fingerprint=FP).header) + 1
    with pytest.raises(container.ContainerError, match="stage mismatch"):
      codec.decompress(data, toy_predict(16, K), expected_fingerprint=FP, policy=policy, num_classes=K)
    with pytest.raises(container.ContainerError, match="policy mismatch"):
      codec.decompress(data, predict, expected_fingerprint=FP, policy=[0, 5, 16, 32, 41], num_classes=K, stages=stages)
    for n in range(len(data)):
      with pytest.raises(container.ContainerError):
        codec.decompress(data[:n], predict, expected_fingerprint=FP, policy=policy, num_classes=K, stages=stages)
  # A stage count of 1 or absurd ones in a version 2 header are corrupt.
  data = files["dataset"]
  c = packing.unpack_container(data, expected_fingerprint=FP)
  at = len(c.header) - len(container.varint_bytes(11)) - 4 - 1 - 1  # stages varint sits before budget and the hash
  assert data[at] == 3
  for bad in (1, 0, 65, 127):
    with pytest.raises(container.ContainerError, match="stage count"):
      packing.unpack_container(data[:at] + bytes([bad]) + data[at + 1 :], expected_fingerprint=FP)


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
      _, out = codec.decompress(
        bytes(data), predict, expected_fingerprint=FP, policy=policy, num_classes=K, stages=stages
      )
    except container.ContainerError as e:
      outcome["error"] += 1
      outcome["crc"] += "CRC mismatch" in str(e)
      continue
    assert np.array_equal(out, x), f"silent wrong output for trial {trial}"
    outcome["exact"] += 1
  print(f"\nupscale fuzz: {outcome} (silent wrong outputs: 0)")
  assert outcome["error"] > 0


def test_mixture_files_decode_and_corruption_is_caught():
  """Through the coding walk: a 16-bit mixture model round-trips in both modes, the container says 'splits',
  decoding with the table scheme is refused, and a damaged payload is an error, never wrong data."""
  rng = np.random.default_rng(3)
  K, M, B, D = 1 << 16, 5, 2, 24
  table = mixture_params(rng, (D, K // 4096), M)  # depends on the position and a coarse view of the input

  def predict(x, known, t, pos):
    del known, t
    return np.stack([table[pos, np.minimum(x[b, pos] // 4096, table.shape[1] - 1)] for b in range(len(x))])

  predict.positions_only = True
  x = rng.integers(0, K, (B, D))
  symbols = entropy_models.MixtureSplits(K, M)
  for mode in container.MODES:
    data = codec.compress(
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
    c, y = codec.decompress(
      data, predict, expected_fingerprint="ab" * 8, policy=[0, 5, 11], num_classes=K, symbols=symbols
    )
    assert c.symbols == "splits"
    np.testing.assert_array_equal(y, x)
    with pytest.raises(container.ContainerError, match="coding scheme mismatch"):
      codec.decompress(data, predict, expected_fingerprint="ab" * 8, policy=[0, 5, 11], num_classes=K)
    bad = bytearray(data)
    bad[-3] ^= 0x10
    with pytest.raises(container.ContainerError):
      codec.decompress(
        bytes(bad), predict, expected_fingerprint="ab" * 8, policy=[0, 5, 11], num_classes=K, symbols=symbols
      )


def compact_files(num_items=3, policy=(0, 3, 7, 12), seed=11):
  D, K = 16, 17
  predict = toy_predict(D, K, seed=5)
  x = items("walk", num_items, D, K, np.random.default_rng(2)).reshape(num_items, 4, 4, 1)
  policy = np.array(policy)
  files = {
    mode: codec.compress(
      predict, x, mode=mode, fingerprint=FP, kind="image", policy=policy, order_seed=seed, num_classes=K, compact=True
    )
    for mode in container.MODES
  }
  return predict, x, policy, K, files


def decode_compact(data, predict, policy, K, fingerprint=FP, shape=(4, 4, 1)):
  return codec.decompress(
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
    data = codec.compress(
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
    c = packing.unpack_container(data, expected_fingerprint=FP, expected_shape=(8, 8, 1))
    assert (c.version, len(c.header), len(data) - len(c.payloads[0])) == (3, 4, 8)
    nll = quantised_nll_bits(predict, x.reshape(1, D), orders.order_from_seed(0, D), np.arange(D), K)[0]
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
    assert c.policy_hash == container.policy_hash(policy, 16)
    stored = (seed != 0 or num_items != 1) + (num_items != 1) + 5 * (len(policy) != 16)  # 1-byte varints here
    assert len(c.header) == 4 + stored
  # The shape is stored when it is not the one the decoder is told to expect.
  data = packing.pack_container(
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
  assert packing.unpack_container(data, expected_fingerprint=FP).item_shape == (16,)
  with pytest.raises(container.ContainerError, match="item shape"):
    packing.unpack_container(data, expected_fingerprint=FP, expected_shape=(4, 4, 1))


def test_compact_files_refuse_wrong_models_and_damage_with_one_line():
  predict, x, policy, K, files = compact_files()
  data = files["item"]
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    decode_compact(data, predict, policy, K, fingerprint="ff" * 32)
  # Another model sharing the two stored fingerprint bytes: only the CRC (keyed by the whole fingerprint) knows.
  with pytest.raises(container.ContainerError, match="CRC mismatch"):
    decode_compact(data, predict, policy, K, fingerprint=FP[:4] + "00" * 30)
  with pytest.raises(container.ContainerError, match="policy mismatch"):
    decode_compact(data, predict, np.array([0, 3, 7, 13]), K)
  with pytest.raises(ValueError, match="expected_shape"):
    packing.unpack_container(data, expected_fingerprint=FP)
  with pytest.raises(container.ContainerError, match="corrupt"):  # the last payload runs to the end of the file
    decode_compact(data + b"\x07", predict, policy, K)
  for blob in files.values():
    for n in range(len(blob)):
      with pytest.raises(container.ContainerError):
        decode_compact(blob[:n], predict, policy, K)


def test_fuzzed_compact_files_never_decode_to_wrong_data():
  """4,000 damaged compact files (single and multi-item, both modes): each is refused or decodes exactly."""
  cases = []
  for predict, x, policy, K, files in (compact_files(), compact_files(1, tuple(range(16)), 0)):
    for mode in container.MODES:
      cases.append((files[mode], x, lambda d, p=predict, s=policy, k=K: decode_compact(d, p, s, k)[1]))
  outcome = fuzz_files(cases, 4000, seed=321)
  print(f"\ncompact fuzz: {outcome} (silent wrong outputs: 0)")
