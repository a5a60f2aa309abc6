"""Compression jobs with real (tiny) trained models: exact file round trips, rates, fuzzing and refusals."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from ardm_jax import cli, coding_items, coding_model, compress, configs, file_items, train
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
    blob, s = compress.compress_items(digits, items, mode=mode, steps=steps, order_seed=5)
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
  best, scores = compress.search_order(digits, steps, 3, num_items=8, base_seed=7)
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
  items exactly or raise a ContainerError; returns ({'error', 'exact', 'crc'} counts, number of files tried)."""
  outcome, trials = {"error": 0, "exact": 0, "crc": 0}, 0
  for cm, data, x in cases:
    damaged = [mutate(data, rng) for _ in range(flips)] + [data[:n] for n in range(0, len(data), truncation_stride)]
    for bad in damaged:
      trials += 1
      try:
        _, out, _ = compress.decompress_items(cm, bad)
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
        _, x, _ = compress.decompress_items(cm, data)
        cases.append((cm, data, x))
  outcome, trials = fuzz(cases, rng, flips=180)
  print(f"\nfuzzed {trials} damaged files: {outcome} (silent wrong outputs: 0)")
  assert trials >= 1500 and outcome["crc"] > 0
  # The other model: same data, wrong fingerprint; and the other numerics under a forged fingerprint.
  cm, data, _ = cases[0]
  params = jax.tree.map(lambda p: p * 1.1, cm.model.params)
  other = compress.CodingModel(
    model=dataclasses.replace(cm.model, params=params),
    fingerprint="",
    predictor=compress.Predictor(dataclasses.replace(cm.model, params=params), 300),
  )
  other.fingerprint = coding_model.model_fingerprint(other.model)
  assert other.fingerprint != cm.fingerprint
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    compress.decompress_items(other, data)
  other.fingerprint = cm.fingerprint
  with pytest.raises(container.ContainerError):
    compress.decompress_items(other, data)
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    compress.decompress_items(text, data)


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
      compress.decode_file_table(packing.unpack_container(data, expected_fingerprint=None).file_table, spec, 1)


def run(*argv):
  return cli.main([str(a) for a in argv])


def expect_error(capsys, *argv, match):
  with pytest.raises(SystemExit) as exc:
    run(*argv)
  assert exc.value.code == 2
  err = capsys.readouterr().err
  assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


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


# ------------------------------------------------------------------------------------------------------------
# Upscale ARDMs and 16-bit audio (random models: exact coding needs no training)


def random_workdir(path, config, spec):
  """A workdir holding a host-drawn random model (fan-in scaled kernels, unit norms, zero biases) as its step-0
  checkpoint: opened like a trained one, without paying for training or for compiling the initialisers."""
  from ardm_jax import checkpoint, train_state

  os.makedirs(path)
  with open(os.path.join(path, train.CONFIG_FILE), "w") as f:
    json.dump(json.loads(config.to_json(sort_keys=True)), f)
  with open(os.path.join(path, train.DATA_SPEC_FILE), "w") as f:
    json.dump(spec.to_json(), f)
  setup = train_state.build_setup(config, spec)
  rng = np.random.default_rng(0)

  def draw(keypath, leaf):
    name = jax.tree_util.keystr(keypath)
    if "scale" in name:
      return np.ones(leaf.shape, leaf.dtype)
    if leaf.ndim < 2:
      return np.zeros(leaf.shape, leaf.dtype)
    return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)

  abstract = setup.abstract_state
  params = jax.tree_util.tree_map_with_path(draw, abstract.params)
  state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract).replace(params=params, ema_params=params)
  manager = checkpoint.make_manager(str(path), async_save=False)
  checkpoint.save(manager, 0, jax.device_put(state, setup.state_shardings), {"step": 0})
  manager.close()
  return coding_model.open_coding_model(str(path))


def digits_upscale_config(parametrisation):
  return configs.apply_overrides(
    configs.load_config_file(os.path.join(REPO, "experiments", "digits.py:tiny")),
    [
      "--config.ardm.upscale=zero_least_significant",
      "--config.ardm.branch_factor=4",
      f"--config.ardm.parametrisation={parametrisation}",
    ],
  )


AUDIO_L, AUDIO_RATE = 64, 8000


def audio_config(bits=16):
  config = configs.base_config()
  config.data.update(
    dict(
      name="fsdd",
      path=os.path.join(REPO, "..", "shared", "data", "fsdd", "fsdd_8khz.npz"),
      sample_rate=AUDIO_RATE,
      length=AUDIO_L,
      bits=bits,
    )
  )
  config.model.update(dict(name="diffwave", num_blocks=2, features=16, dilation_cycle=2))
  config.ardm.update(dict(output="logistic_mixture", num_mixtures=3))
  config.train.eval_batch_size = 8
  return config


@pytest.fixture(scope="module")
def upscale_models(tmp_path_factory):
  from ardm_jax.train_state import DataSpec

  spec = DataSpec(name="digits", kind="image", shape=(8, 8, 1), num_classes=17)
  root = tmp_path_factory.mktemp("up")
  return {p: random_workdir(root / p, digits_upscale_config(p), spec) for p in ("data", "direct")}


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
  from ardm_jax.train_state import DataSpec

  spec = DataSpec(name="fsdd", kind="audio", shape=(AUDIO_L,), num_classes=1 << 16, sample_rate=AUDIO_RATE, bits=16)
  return random_workdir(tmp_path_factory.mktemp("au") / "audio", audio_config(), spec)


def check_rate(s, lower=True):
  """Payload within 0.5 % + 8 bytes per stream of the model's sum of -log2 p (and of the quantised tables').

  lower=False for per-item streams of an all-zero item: it codes slot 0 (cumulative count 0) at every step, which
  leaves an empty ANS coder's state at 0, so its stream is empty, below its NLL (and still exact).
  """
  slack = 64 * len(s.item_payload_bytes)
  for nll in (s.model_nll_bits, s.table_nll_bits):
    assert (not lower or nll - slack <= 8 * s.payload_bytes) and 8 * s.payload_bytes <= 1.005 * nll + slack, (
      8 * s.payload_bytes,
      nll,
      slack,
    )


def upscale_items():
  rng = np.random.default_rng(4)
  return np.stack(
    [
      np.zeros((8, 8, 1), np.int32),
      np.full((8, 8, 1), 16, np.int32),
      rng.integers(0, 17, size=(8, 8, 1)),
      rng.integers(0, 17, size=(8, 8, 1)),
    ]
  ).astype(np.int32)


@pytest.mark.parametrize("parametrisation", ["data", "direct"])
@pytest.mark.xdist_group("test_compress")
def test_upscale_round_trip_exactly(parametrisation, upscale_models):
  from ardm_jax import policy as policy_lib
  from ardm_jax import upscale

  cm = upscale_models[parametrisation]
  S, D = cm.num_stages, cm.spec.num_steps
  assert S == 3 and cm.objective.parametrisation == parametrisation
  items = upscale_items()
  policies = {"item": upscale.sequential_policy(S, D), "dataset": policy_lib.naive_global_policy(S, D, 7)}
  for mode, steps in policies.items():
    data, s = compress.compress_items(cm, items, mode=mode, steps=steps, order_seed=9)
    c = packing.unpack_container(data, expected_fingerprint=None, expected_shape=cm.spec.shape, num_stages=S)
    assert s.network_calls == len(steps) and (c.version, c.num_stages) == (3, S)
    check_rate(s, lower=mode == "dataset")
    c, out, ds = compress.decompress_items(cm, data)
    assert (c.num_stages, c.budget, ds.network_calls) == (S, len(steps), len(steps))
    np.testing.assert_array_equal(out, items)


@pytest.mark.xdist_group("test_compress")
def test_upscale_nll_is_the_model_policy_likelihood_and_files_round_trip(upscale_models, tmp_path):
  """The coding walk feeds the network exactly what upscale.policy_log_likelihood does (states, mask, global step
  and the stage orders of the seed): the coded NLL is the model's."""
  from ardm_jax import upscale

  cm = upscale_models["data"]
  items = upscale_items()
  steps, label = compress.encoder_policy(cm, 9, naive=True)
  assert label == "naive" and len(steps) == 9
  _, s = compress.compress_items(cm, items, mode="item", steps=steps, order_seed=2)
  S, D = cm.num_stages, cm.spec.num_steps
  sigma = np.broadcast_to(orders.stage_orders(2, D, S), (len(items), S, D))
  with cm.model.setup.context():
    nats = -np.asarray(
      upscale.policy_log_likelihood(
        cm.model.setup.apply_fn, cm.model.params, items, sigma, jnp.asarray(steps, jnp.int32), spec=cm.objective
      )
    )
  np.testing.assert_allclose(s.model_nll_bits, nats.sum() / np.log(2), rtol=1e-4)
  best, scores = compress.search_order(cm, steps, 2, num_items=4, base_seed=2)
  assert best in (2, 3) and np.all(np.isfinite(scores))
  # A DP policy from the workdir's policy file (its optimal split of the total over the stages) is found again.
  from ardm_jax import policy as policy_lib

  losses = [np.random.default_rng(s).random(D) * (3 - s) for s in range(S)]
  policy_lib.save_policy_file(
    os.path.join(cm.workdir, "policy.json"), policy_lib.build_policy_file(losses, [], D, total_budgets=[7])
  )
  dp, label = compress.encoder_policy(cm, 7)
  assert label == "DP-optimal" and len(dp) == 7 and not np.array_equal(dp, policy_lib.naive_global_policy(S, D, 7))
  data, _ = compress.compress_items(cm, items, mode="dataset", steps=dp, order_seed=0)
  c, out, _ = compress.decompress_items(cm, data)
  assert c.budget == 7
  np.testing.assert_array_equal(out, items)
  # Files: PNG and .npy tiles, with the file table.
  src = tmp_path / "in"
  src.mkdir()
  paths = image_inputs(src)[:3] + image_inputs(src)[6:]
  data, report = compress.compress_files(cm, paths, mode="dataset", budget=9, naive=True, keep_names=True)
  written, ds = compress.decompress_file(cm, data, str(tmp_path / "out"))
  assert ds.network_calls == 9 and all(same_content(p, w) for p, w in zip(paths, written))


@pytest.mark.xdist_group("test_compress")
def test_upscale_fuzzed_and_foreign_files_never_decode_wrongly(upscale_models, digits):
  rng = np.random.default_rng(11)
  cm = upscale_models["direct"]
  items = upscale_items()[:3]
  steps = compress.encoder_policy(cm, 3, naive=True)[0]
  cases = [compress.compress_items(cm, items, mode=mode, steps=steps, order_seed=1)[0] for mode in container.MODES]
  outcome, trials = fuzz([(cm, data, items) for data in cases], rng, flips=120, truncation_stride=2)
  print(f"\nfuzzed {trials} damaged upscale files: {outcome} (silent wrong outputs: 0)")
  assert trials >= 300 and outcome["error"] > 0
  # Another model: refused by its fingerprint; under a forged fingerprint, by the policy (a compact file's stage
  # count is the model's, so another stage count cannot match the stored policy hash) or the CRC.
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    compress.decompress_items(upscale_models["data"], cases[0])
  for other, match in ((upscale_models["data"], None), (digits, "policy mismatch")):
    forged = compress.CodingModel(model=other.model, fingerprint=cm.fingerprint, predictor=other.predictor)
    with pytest.raises(container.ContainerError, match=match):
      compress.decompress_items(forged, cases[1])


def write_wav(path, pcm, rate=AUDIO_RATE, channels=1, width=2):
  import wave

  with wave.open(str(path), "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    w.writeframes(np.asarray(pcm).astype("<i2" if width == 2 else "u1").tobytes())
  return str(path)


def wav_content(path):
  import wave

  with wave.open(str(path), "rb") as w:
    return w.getparams()[:4], w.readframes(w.getnframes())


def wav_inputs(d):
  rng = np.random.default_rng(5)
  t = np.arange(150)
  speech = np.clip(8000 * np.sin(t / 3.0) + rng.normal(0, 300, t.size), -32768, 32767)
  extremes = np.resize([-32768, 32767, 0, -1], AUDIO_L)
  return [
    write_wav(d / "speech.wav", speech),
    write_wav(d / "exact.wav", rng.integers(-3000, 3000, AUDIO_L)),
    write_wav(d / "extremes.wav", extremes),
    write_wav(d / "empty.wav", []),
  ]


@pytest.mark.xdist_group("test_compress")
def test_audio_wav_round_trip_exactly(audio, tmp_path, capsys):
  assert (
    audio.spec.num_classes == 1 << 16 and type(audio.objective.distribution).__name__ == "DiscretisedLogisticMixture"
  )
  src = tmp_path / "in"
  src.mkdir()
  paths = wav_inputs(src)
  for mode, budget in (("item", None), ("dataset", 4)):
    data, report = compress.compress_files(
      audio, paths, mode=mode, budget=budget, naive=budget is not None, keep_names=mode == "item"
    )
    s = report["stats"]
    assert s.num_items == 3 + 1 + 1 + 1 and s.network_calls == (budget or AUDIO_L)
    assert 10 < s.bpd(s.model_nll_bits) < 17
    check_rate(s)
    written, ds = compress.decompress_file(audio, data, str(tmp_path / f"out_{mode}"))
    assert ds.network_calls == s.network_calls
    for p, w in zip(paths, written):
      if mode == "item":
        assert os.path.basename(w) == os.path.basename(p)
      assert wav_content(p) == wav_content(w), (p, w)
  # The CLI: a clip of exactly L samples needs no file table and comes back as item_0000.wav.
  out = tmp_path / "x.ardm"
  run("compress", "--workdir", audio.workdir, paths[1], "-o", out)
  assert "bits/sample" in capsys.readouterr().out
  run("decompress", "--workdir", audio.workdir, out, "-o", tmp_path / "cli")
  assert wav_content(paths[1]) == wav_content(tmp_path / "cli" / "item_0000.wav")


@pytest.mark.xdist_group("test_compress")
def test_audio_files_of_the_table_scheme_still_decode(audio):
  """Files written before mixtures were coded by splits hold K-wide tables (flag bit 4 clear); they decode with the
  same model, and both schemes cost about the same."""
  assert audio.predictor.symbols.name == "splits"
  rng = np.random.default_rng(5)
  items = rng.integers(20000, 40000, (2,) + audio.spec.shape)
  steps = np.array([0, 3, 9], np.int64)
  legacy = audio.predictor.with_symbols("tables")
  data = codec.compress(
    legacy,
    items,
    mode="item",
    fingerprint=audio.fingerprint,
    kind="audio",
    policy=steps,
    order_seed=0,
    num_classes=audio.spec.num_classes,
  )
  assert packing.unpack_container(data, expected_fingerprint=None).symbols == "tables"  # a version 1 file
  new, _ = compress.compress_items(audio, items, mode="item", steps=steps, order_seed=0)
  assert packing.unpack_container(new, expected_fingerprint=None, expected_shape=audio.spec.shape).symbols == "splits"
  assert abs(len(new) - len(data)) <= 0.01 * len(data) + 8
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(coding_items, "decoder_policy", lambda cm, c, policy_file=None: steps)
    for blob in (data, new):
      _, x, _ = compress.decompress_items(audio, blob)
      np.testing.assert_array_equal(x, items)


@pytest.mark.xdist_group("test_compress")
def test_wav_inputs_that_cannot_come_back_exactly_are_refused(tmp_path, capsys, audio):
  from ardm_jax.train_state import DataSpec

  spec = audio.spec
  pcm = np.arange(-40, 40) * 256
  cases = {
    "stereo.wav": (
      write_wav(tmp_path / "stereo.wav", np.repeat(pcm, 2), channels=2),
      "2 channel(s) of 16-bit samples at 8000 Hz; this model codes 16-bit PCM mono WAV at 8000 Hz",
    ),
    "byte.wav": (write_wav(tmp_path / "byte.wav", pcm % 256, width=1), "8-bit samples"),
    "fast.wav": (write_wav(tmp_path / "fast.wav", pcm, rate=16000), "at 16000 Hz; this model codes"),
    "junk.wav": (str(tmp_path / "junk.wav"), "not a readable PCM WAV"),
  }
  (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
  for path, msg in cases.values():
    with pytest.raises(ValueError, match=msg.replace("(", "\\(").replace(")", "\\)")):
      file_items.read_input(spec, path)
  expect_error(
    capsys,
    "compress",
    "--workdir",
    audio.workdir,
    cases["fast.wav"][0],
    "-o",
    tmp_path / "r.ardm",
    match="this model codes 16-bit PCM mono WAV at 8000 Hz",
  )
  save_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
  with pytest.raises(ValueError, match="audio models take .wav"):
    file_items.read_input(spec, str(tmp_path / "a.png"))
  # An 8-bit model keeps the 8 most significant bits: exact only for clips whose low 8 bits are zero.
  spec8 = DataSpec(name="fsdd", kind="audio", shape=(AUDIO_L,), num_classes=256, sample_rate=AUDIO_RATE, bits=8)
  ok = file_items.read_input(spec8, write_wav(tmp_path / "ok8.wav", pcm))
  np.testing.assert_array_equal(ok.data, pcm // 256 + 128)
  compress._write_entry(spec8, ok, ok.data, str(tmp_path / "back8.wav"), overwrite=False)
  assert wav_content(tmp_path / "back8.wav") == wav_content(tmp_path / "ok8.wav")
  with pytest.raises(ValueError, match="sample 1 \\(-9983\\) is not a multiple of 256"):
    file_items.read_input(spec8, write_wav(tmp_path / "odd8.wav", pcm + np.arange(pcm.size) % 2))
