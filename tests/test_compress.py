"""Compression jobs with real (tiny) trained models: exact file round trips, rates, fuzzing and refusals."""

import dataclasses
import json
import os

from conftest import expect_error, run
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from ardm_jax import coding_items, coding_model, coding_policy, compress, configs, file_items, train
from ardm_jax.coding import codec, container, orders, packing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_workdir(path, config_spec, *overrides):
  """A tiny model trained 3 steps at a large learning rate (no EMA): far from uniform, in seconds."""
  overrides = [
    "--config.train.num_steps=3",
    "--config.train.eval_passes=0",
    "--config.optim.ema_decay=0.0",
    "--config.optim.learning_rate=0.05",
    "--config.optim.warmup_steps=1",
    *overrides,
  ]
  config = configs.apply_overrides(configs.load_config_file(os.path.join(REPO, "experiments", config_spec)), overrides)
  train.train_and_evaluate(config, str(path))
  return str(path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  # No attention blocks: the coder's tests need a U-Net, and this one compiles in about 60% of the time.
  return coding_model.open_coding_model(
    make_workdir(tmp_path_factory.mktemp("cz") / "digits", "digits.py:tiny", "--config.model.attention=False")
  )


@pytest.fixture(scope="module")
def text(tmp_path_factory):
  return coding_model.open_coding_model(
    make_workdir(tmp_path_factory.mktemp("cz") / "text", "local_text.py:tiny", "--config.data.name=pydoc_text")
  )


def levels(v):
  return np.round(np.asarray(v) * 255.0 / 16).astype(np.uint8)  # digits class k -> its 8-bit grey level


def save_png(path, pixels):
  Image.fromarray(pixels).save(path)
  return str(path)


def image_inputs(d):
  """PNG and .npy inputs, the extremes included, of the model's shape and larger (tiled)."""
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 17, size=(8, 8))
  paths = [
    save_png(d / "zeros.png", levels(np.zeros((8, 8), int))),
    save_png(d / "max.png", levels(np.full((8, 8), 16))),
    save_png(d / "noise.png", levels(noise)),
    save_png(d / "grey_rgb.png", np.repeat(levels(noise.T)[..., None], 3, axis=-1)),
    save_png(d / "wide.png", levels(rng.integers(0, 17, size=(5, 19)))),
  ]
  arrays = {
    "tall.npy": rng.integers(0, 17, size=(17, 9)).astype(np.int64),
    "chan.npy": np.full((8, 8, 1), 16, np.uint8),
    "stack.npy": rng.integers(0, 17, size=(3, 9, 8, 1)).astype(np.int16),
  }
  for name, a in arrays.items():
    np.save(d / name, a)
    paths.append(str(d / name))
  return paths


def text_inputs(d, L):
  rng = np.random.default_rng(1)
  alphabet = " abcdefghijklmnopqrstuvwxyz"
  texts = {
    "spaces.txt": " " * L,
    "zzz.txt": "z" * (3 * L + 5) + "\n",
    "noise.txt": "".join(rng.choice(list(alphabet), L)),
    "empty.txt": "",
    "prose.txt": "the quick brown fox jumps over the lazy dog\n",
  }
  for name, t in texts.items():
    (d / name).write_text(t, encoding="utf-8")
  return [str(d / n) for n in texts]


def same_content(a, b):
  if a.endswith(".npy"):
    x, y = np.load(a), np.load(b)
    return x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
  if a.endswith(".png"):
    x, y = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    x = x[..., 0] if x.ndim == 3 and y.ndim == 2 else x  # grey RGB comes back as 8-bit grayscale
    return np.array_equal(x, y)
  return open(a, "rb").read() == open(b, "rb").read()


@pytest.mark.parametrize("mode", container.MODES)
@pytest.mark.parametrize("kind", ["image", "text"])
@pytest.mark.xdist_group("test_compress")
def test_round_trip_files_exactly(kind, mode, digits, text, tmp_path):
  cm = digits if kind == "image" else text
  src = tmp_path / "in"
  src.mkdir()
  paths = image_inputs(src) if kind == "image" else text_inputs(src, cm.spec.shape[0])
  for budget, keep in ((None, True), (5, False)):
    data, report = compress.compress_files(
      cm, paths, mode=mode, budget=budget, naive=budget is not None, keep_names=keep, seed=3
    )
    s = report["stats"]
    assert s.network_calls == (cm.spec.num_steps if budget is None else budget)  # all items in one batch
    out = tmp_path / f"out_{budget}"
    written, ds = compress.decompress_file(cm, data, str(out))
    assert ds.network_calls == s.network_calls and ds.num_items == s.num_items
    assert len(written) == len(paths)
    for p, w in zip(paths, written):
      if keep:
        assert os.path.basename(w) == os.path.basename(p)
      assert same_content(p, w), (p, w)


@pytest.mark.xdist_group("test_compress")
def test_default_files_need_no_file_table(digits, tmp_path):
  paths = [save_png(tmp_path / f"{i}.png", levels(np.full((8, 8), i))) for i in range(3)]
  data, report = compress.compress_files(digits, paths)
  c = packing.unpack_container(data, expected_fingerprint=digits.fingerprint, expected_shape=digits.spec.shape)
  # Compact: magic, flags, 2 fingerprint bytes, then only the seed varint and the item count (3 items).
  assert c.version == 3 and c.file_table == b"" and len(c.header) == 6 and report["stats"].header_bytes == 6
  written, _ = compress.decompress_file(digits, data, str(tmp_path / "out"))
  assert [os.path.basename(w) for w in written] == ["item_0000.png", "item_0001.png", "item_0002.png"]
  assert all(same_content(p, w) for p, w in zip(paths, written))


@pytest.mark.xdist_group("test_compress")
def test_rate_matches_the_model_nll_and_the_network_agrees_with_the_ardm_math(digits):
  """Payload within 0.5 % + 64 bits per stream of sum -log2 p; the coded NLL is the model's policy NLL."""
  from ardm_jax import ardm, data

  items = data.load(digits.model.config.data).eval_items("test")[:24]
  D = digits.spec.num_steps
  for mode, steps in (("item", np.arange(D)), ("dataset", np.arange(0, D, 4))):
    blob, s = coding_items.compress_items(digits, items, mode=mode, steps=steps, order_seed=5)
    streams = len(s.item_payload_bytes)
    assert s.bpd(s.model_nll_bits) < np.log2(17) - 0.2  # a model that predicts something, not uniform tables
    assert abs(s.table_nll_bits - s.model_nll_bits) < 1e-3 * s.model_nll_bits + 0.01
    assert s.model_nll_bits - 64 * streams <= 8 * s.payload_bytes <= 1.005 * s.model_nll_bits + 64 * streams
    assert len(blob) == s.header_bytes + s.record_bytes + s.payload_bytes
    sigma = np.broadcast_to(orders.order_from_seed(5, D), (len(items), D))
    with digits.model.setup.context():
      nats = -np.asarray(
        ardm.policy_log_likelihood(
          digits.model.setup.apply_fn, digits.model.params, items, sigma, jnp.asarray(steps, jnp.int32), num_classes=17
        )
      )
    np.testing.assert_allclose(s.model_nll_bits, nats.sum() / np.log(2), rtol=1e-4)


@pytest.mark.xdist_group("test_compress")
def test_order_search_keeps_the_best_seed(digits):
  steps = np.arange(0, 64, 8)
  best, scores = coding_policy.search_order(digits, steps, 3, num_items=8, base_seed=7)
  assert len(scores) == 3 and best == 7 + int(np.argmin(scores)) and np.all(np.isfinite(scores))


def mutate(data, rng):
  data = bytearray(data)
  for pos in rng.choice(len(data), size=min(len(data), int(rng.choice([1, 1, 2, 3]))), replace=False):
    if rng.random() < 0.5:
      data[pos] ^= 1 << int(rng.integers(8))
    else:
      data[pos] = (data[pos] + int(rng.integers(1, 256))) % 256
  return bytes(data)


def fuzz(cases, rng, flips, truncation_stride=1):
  """Decodes damaged copies of each (model, file, items): byte flips and truncations. Every one must decode to the
  items exactly or raise a ContainerError; returns ({'error', 'exact', 'crc'} counts, number of files tried).

  The decoder gets a symbol cap of 16 times the file's true count, as a caller who knows roughly what an archive
  holds passes: a flip that raises the item count below the cap is caught only after that many symbols are decoded
  (decompress_items' max_symbols), and under the default cap one such upscale file took over two minutes."""
  outcome, trials = {"error": 0, "exact": 0, "crc": 0}, 0
  for cm, data, x in cases:
    damaged = [mutate(data, rng) for _ in range(flips)] + [data[:n] for n in range(0, len(data), truncation_stride)]
    cap = 16 * x.size * cm.num_stages
    for bad in damaged:
      trials += 1
      try:
        _, out, _ = coding_items.decompress_items(cm, bad, max_symbols=cap)
      except container.ContainerError as e:
        outcome["error"] += 1
        outcome["crc"] += "CRC" in str(e)
        continue
      assert np.array_equal(out, x), "silent wrong output"
      outcome["exact"] += 1
  return outcome, trials


@pytest.mark.xdist_group("test_compress")
def test_fuzzed_truncated_and_foreign_files_never_decode_wrongly(digits, text, tmp_path):
  """Every damaged file either decodes exactly or fails with a ContainerError; none gives other data."""
  rng = np.random.default_rng(7)
  src = tmp_path / "in"
  src.mkdir()
  cases = []
  for cm, paths in ((digits, image_inputs(src)[:3] + image_inputs(src)[5:7]), (text, text_inputs(src, 32)[:3])):
    for mode in container.MODES:
      for keep in (False, True):
        data, _ = compress.compress_files(cm, paths, mode=mode, budget=3, naive=True, keep_names=keep)
        _, x, _ = coding_items.decompress_items(cm, data)
        cases.append((cm, data, x))
  outcome, trials = fuzz(cases, rng, flips=180)
  print(f"\nfuzzed {trials} damaged files: {outcome} (silent wrong outputs: 0)")
  assert trials >= 1500 and outcome["crc"] > 0
  # The other model: same data, wrong fingerprint; and the other numerics under a forged fingerprint.
  cm, data, _ = cases[0]
  params = jax.tree.map(lambda p: p * 1.1, cm.model.params)
  other = coding_model.CodingModel(
    model=dataclasses.replace(cm.model, params=params),
    fingerprint="",
    predictor=coding_model.Predictor(dataclasses.replace(cm.model, params=params), 300),
  )
  other.fingerprint = coding_model.model_fingerprint(other.model)
  assert other.fingerprint != cm.fingerprint
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    coding_items.decompress_items(other, data)
  other.fingerprint = cm.fingerprint
  with pytest.raises(container.ContainerError):
    coding_items.decompress_items(other, data)
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    coding_items.decompress_items(text, data)


@pytest.mark.xdist_group("test_compress")
def test_file_table_rejects_unsafe_names(digits):
  spec = digits.spec
  x = np.zeros((1, 64), np.int32)
  for name in (b"../evil.png", b"a/b.png", b".."):
    table = (
      container.varint_bytes(1)
      + bytes([0 | 4])
      + container.varint_bytes(8) * 2
      + container.varint_bytes(len(name))
      + name
    )
    data = codec.compress(
      lambda *a: np.zeros((1, 64, 17), np.float32),
      x.reshape(1, 8, 8, 1),
      mode="item",
      fingerprint=digits.fingerprint,
      kind="image",
      policy=[0],
      order_seed=0,
      num_classes=17,
      file_table=table,
    )
    with pytest.raises(container.ContainerError, match="unsafe"):
      file_items.decode_file_table(packing.unpack_container(data, expected_fingerprint=None).file_table, spec, 1)


@pytest.mark.xdist_group("test_compress")
def test_cli_round_trip_policies_and_refusals(digits, text, tmp_path, capsys):
  w = digits.workdir
  paths = image_inputs(tmp_path)[:3]
  out = tmp_path / "x.ardm"
  run("compress", "--workdir", w, *paths, "-o", out, "--search-orders", "2", "--search-items", "4")
  printed = capsys.readouterr().out
  assert "bits/dim" in printed and "model NLL" in printed and "64 network calls" in printed and "kept seed" in printed
  expect_error(capsys, "compress", "--workdir", w, *paths, "-o", out, match="--overwrite")
  run("decompress", "--workdir", w, out, "-o", tmp_path / "dec")
  assert all(same_content(p, tmp_path / "dec" / f"item_{i:04d}.png") for i, p in enumerate(paths))
  expect_error(capsys, "decompress", "--workdir", w, out, "-o", tmp_path / "dec", match="--overwrite")
  # The DP policy from policy.json is found again by its hash; a changed policy file is refused.
  run("policy", "--workdir", w, "--budgets", "4,6", "--samples", "2")
  run("compress", "--workdir", w, *paths, "-o", tmp_path / "dp.ardm", "--budget", "6", "--mode", "dataset")
  run("compress", "--workdir", w, *paths, "-o", tmp_path / "nv.ardm", "--budget", "6", "--naive")
  assert "6 network calls" in capsys.readouterr().out
  for name in ("dp", "nv"):
    run("decompress", "--workdir", w, tmp_path / f"{name}.ardm", "-o", tmp_path / name)
    assert all(same_content(p, tmp_path / name / f"item_{i:04d}.png") for i, p in enumerate(paths))
  policy_path = os.path.join(w, "policy.json")
  pf = json.load(open(policy_path))
  entry = pf["stages"][0]["policies"]["6"]
  entry["steps"] = [0, 1, 2, 3, 4, 5] if entry["steps"] != [0, 1, 2, 3, 4, 5] else [0, 2, 3, 4, 5, 6]
  json.dump(pf, open(policy_path, "w"))
  expect_error(
    capsys, "decompress", "--workdir", w, tmp_path / "dp.ardm", "-o", tmp_path / "dp2", match="policy mismatch"
  )
  # Inputs that cannot be coded losslessly are refused with one line naming the fix.
  bad = tmp_path / "bad"
  bad.mkdir()
  save_png(bad / "lvl.png", np.full((8, 8), 37, np.uint8))
  save_png(bad / "rgba.png", np.zeros((8, 8, 4), np.uint8))
  save_png(bad / "rgb.png", np.stack([np.zeros((8, 8), np.uint8)] * 2 + [np.full((8, 8), 255, np.uint8)], -1))
  (bad / "a.wav").write_bytes(b"RIFF")
  (bad / "t.txt").write_text("hello world\n")
  (bad / "T.txt").write_text("ok\nHello\n")
  np.save(bad / "f.npy", np.zeros((8, 8), np.float32))
  for name, msg in (
    ("lvl.png", "not one of the model's 17 levels"),
    ("rgba.png", "RGBA PNG"),
    ("rgb.png", "convert it to grayscale"),
    ("a.wav", "WAV audio needs an audio model"),
    ("t.txt", "model codes images"),
    ("f.npy", "integer class values"),
  ):
    expect_error(capsys, "compress", "--workdir", w, bad / name, "-o", tmp_path / "r.ardm", match=msg)
  expect_error(
    capsys,
    "compress",
    "--workdir",
    text.workdir,
    bad / "T.txt",
    "-o",
    tmp_path / "r.ardm",
    match="'\\n' at line 1, column 3",
  )
  expect_error(
    capsys, "compress", "--workdir", text.workdir, paths[0], "-o", tmp_path / "r.ardm", match="text models take .txt"
  )
  expect_error(capsys, "decompress", "--workdir", text.workdir, out, "-o", tmp_path / "t", match="fingerprint mismatch")
  expect_error(capsys, "decompress", "--workdir", w, paths[0], "-o", tmp_path / "t", match="not an ARDM container")
