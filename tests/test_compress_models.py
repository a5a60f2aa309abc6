"""Compression with upscale ARDMs (both parametrisations) and 16-bit audio models: exact round trips, rates
equal to the policy likelihood, fuzzed and foreign files, WAV inputs. The models are random (exact coding needs no
training), written as a workdir's step-0 checkpoint."""

import json
import os
import wave

from conftest import expect_error, run
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_compress import REPO, digits, fuzz, image_inputs, same_content, save_png  # noqa: F401  (digits: a fixture)

from ardm_jax import coding_items, coding_model, coding_policy, compress, configs, file_items, policy_file
from ardm_jax.coding import codec, container, orders, packing


def random_workdir(path, config, spec):
  """A workdir holding a host-drawn random model (fan-in scaled kernels, unit norms, zero biases) as its step-0
  checkpoint: opened like a trained one, without paying for training or for compiling the initialisers."""
  from ardm_jax import checkpoint, train_state

  os.makedirs(path)
  with open(os.path.join(path, configs.CONFIG_FILE), "w") as f:
    json.dump(json.loads(config.to_json(sort_keys=True)), f)
  with open(os.path.join(path, configs.DATA_SPEC_FILE), "w") as f:
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
    data, s = coding_items.compress_items(cm, items, mode=mode, steps=steps, order_seed=9)
    c = packing.unpack_container(data, expected_fingerprint=None, expected_shape=cm.spec.shape, num_stages=S)
    assert s.network_calls == len(steps) and (c.version, c.num_stages) == (3, S)
    check_rate(s, lower=mode == "dataset")
    c, out, ds = coding_items.decompress_items(cm, data)
    assert (c.num_stages, c.budget, ds.network_calls) == (S, len(steps), len(steps))
    np.testing.assert_array_equal(out, items)


@pytest.mark.xdist_group("test_compress")
def test_upscale_nll_is_the_model_policy_likelihood_and_files_round_trip(upscale_models, tmp_path):
  """The coding walk feeds the network exactly what upscale.policy_log_likelihood does (states, mask, global step
  and the stage orders of the seed): the coded NLL is the model's."""
  from ardm_jax import upscale

  cm = upscale_models["data"]
  items = upscale_items()
  steps, label = coding_policy.encoder_policy(cm, 9, naive=True)
  assert label == "naive" and len(steps) == 9
  _, s = coding_items.compress_items(cm, items, mode="item", steps=steps, order_seed=2)
  S, D = cm.num_stages, cm.spec.num_steps
  sigma = np.broadcast_to(orders.stage_orders(2, D, S), (len(items), S, D))
  with cm.model.setup.context():
    nats = -np.asarray(
      upscale.policy_log_likelihood(
        cm.model.setup.apply_fn, cm.model.params, items, sigma, jnp.asarray(steps, jnp.int32), spec=cm.objective
      )
    )
  np.testing.assert_allclose(s.model_nll_bits, nats.sum() / np.log(2), rtol=1e-4)
  best, scores = coding_policy.search_order(cm, steps, 2, num_items=4, base_seed=2)
  assert best in (2, 3) and np.all(np.isfinite(scores))
  # A DP policy from the workdir's policy file (its optimal split of the total over the stages) is found again.
  from ardm_jax import policy as policy_lib

  losses = [np.random.default_rng(s).random(D) * (3 - s) for s in range(S)]
  policy_file.save_policy_file(
    os.path.join(cm.workdir, "policy.json"), policy_file.build_policy_file(losses, [], D, total_budgets=[7])
  )
  dp, label = coding_policy.encoder_policy(cm, 7)
  assert label == "DP-optimal" and len(dp) == 7 and not np.array_equal(dp, policy_lib.naive_global_policy(S, D, 7))
  data, _ = coding_items.compress_items(cm, items, mode="dataset", steps=dp, order_seed=0)
  c, out, _ = coding_items.decompress_items(cm, data)
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
def test_upscale_fuzzed_and_foreign_files_never_decode_wrongly(upscale_models, digits):  # noqa: F811
  rng = np.random.default_rng(11)
  cm = upscale_models["direct"]
  items = upscale_items()[:3]
  steps = coding_policy.encoder_policy(cm, 3, naive=True)[0]
  cases = [coding_items.compress_items(cm, items, mode=mode, steps=steps, order_seed=1)[0] for mode in container.MODES]
  outcome, trials = fuzz([(cm, data, items) for data in cases], rng, flips=120, truncation_stride=2)
  print(f"\nfuzzed {trials} damaged upscale files: {outcome} (silent wrong outputs: 0)")
  assert trials >= 300 and outcome["error"] > 0
  # Another model: refused by its fingerprint; under a forged fingerprint, by the policy (a compact file's stage
  # count is the model's, so another stage count cannot match the stored policy hash) or the CRC.
  with pytest.raises(container.ContainerError, match="fingerprint mismatch"):
    coding_items.decompress_items(upscale_models["data"], cases[0])
  for other, match in ((upscale_models["data"], None), (digits, "policy mismatch")):
    forged = coding_model.CodingModel(model=other.model, fingerprint=cm.fingerprint, predictor=other.predictor)
    with pytest.raises(container.ContainerError, match=match):
      coding_items.decompress_items(forged, cases[1])


def write_wav(path, pcm, rate=AUDIO_RATE, channels=1, width=2):

  with wave.open(str(path), "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    w.writeframes(np.asarray(pcm).astype("<i2" if width == 2 else "u1").tobytes())
  return str(path)


def wav_content(path):

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
  new, _ = coding_items.compress_items(audio, items, mode="item", steps=steps, order_seed=0)
  assert packing.unpack_container(new, expected_fingerprint=None, expected_shape=audio.spec.shape).symbols == "splits"
  assert abs(len(new) - len(data)) <= 0.01 * len(data) + 8
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(coding_items, "decoder_policy", lambda cm, c, policy_file=None: steps)
    for blob in (data, new):
      _, x, _ = coding_items.decompress_items(audio, blob)
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
  file_items.write_entry(spec8, ok, ok.data, str(tmp_path / "back8.wav"), overwrite=False)
  assert wav_content(tmp_path / "back8.wav") == wav_content(tmp_path / "ok8.wav")
  with pytest.raises(ValueError, match="sample 1 \\(-9983\\) is not a multiple of 256"):
    file_items.read_input(spec8, write_wav(tmp_path / "odd8.wav", pcm + np.arange(pcm.size) % 2))
