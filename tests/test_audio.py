"""Audio: 16-bit samples <-> classes, WAV round trips, resampling, the three loaders (WAV folder, FSDD, SC09 built
by tfds from a small fake archive), and the DiffWave network's interface, receptive field and annotations."""

import io
import os
from pathlib import Path
import tarfile
import wave

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardm_jax import data
from ardm_jax.data import audio
from ardm_jax.nets import build_network, layers

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _wav_bytes(pcm, rate=16000, channels=1, width=2):
  buf = io.BytesIO()
  with wave.open(buf, "wb") as w:
    w.setnchannels(channels)
    w.setsampwidth(width)
    w.setframerate(rate)
    w.writeframes(np.asarray(pcm).tobytes())
  return buf.getvalue()


def _noise(n, seed, scale=3000):
  return np.clip(np.random.default_rng(seed).normal(size=n) * scale, -32768, 32767).astype("<i2")


# ----------------------------------------------------------------------------------------------- samples and WAVs
def test_pcm_classes_round_trip_and_coarse_bits():
  pcm = np.array([-32768, -1, 0, 1, 32767], np.int16)
  x = audio.pcm_to_classes(pcm)
  assert x.tolist() == [0, 32767, 32768, 32769, 65535]
  np.testing.assert_array_equal(audio.classes_to_pcm(x), pcm)
  x8 = audio.pcm_to_classes(pcm, bits=8)
  assert x8.tolist() == [0, 127, 128, 128, 255]
  # 8-bit classes decode to the centre of their 256 samples.
  assert audio.classes_to_pcm(x8, bits=8).tolist() == [-32640, -128, 128, 128, 32640]
  with pytest.raises(ValueError):
    audio.classes_to_pcm(np.array([256]), bits=8)
  with pytest.raises(ValueError):
    audio.pcm_to_classes(pcm.astype(np.int32))


def test_wav_write_read_round_trip_is_bit_exact(tmp_path):
  x = audio.pcm_to_classes(_noise(1234, 0, scale=20000))
  audio.write_wav(tmp_path / "a.wav", x, 8000)
  pcm, rate = audio.read_wav(tmp_path / "a.wav")
  assert rate == 8000
  np.testing.assert_array_equal(audio.pcm_to_classes(pcm), x)
  paths = audio.write_wav_items(tmp_path / "out", np.stack([x, x[::-1]]), 8000)
  assert [os.path.basename(p) for p in paths] == ["sample_000.wav", "sample_001.wav"]
  np.testing.assert_array_equal(audio.pcm_to_classes(audio.read_wav(paths[1])[0]), x[::-1])


@pytest.mark.parametrize("channels,width", [(2, 2), (1, 1)])
def test_read_wav_refuses_other_formats(tmp_path, channels, width):
  path = tmp_path / "bad.wav"
  path.write_bytes(_wav_bytes(np.zeros(100 * channels * width, np.uint8), channels=channels, width=width))
  with pytest.raises(ValueError, match="16-bit PCM mono"):
    audio.read_wav(path)
  (tmp_path / "junk.wav").write_bytes(b"not a wav")
  with pytest.raises(ValueError, match="not a readable"):
    audio.read_wav(tmp_path / "junk.wav")


def test_resample_doubles_length_and_keeps_a_tone():
  t = np.arange(800) / 8000
  tone = (10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
  up = audio.resample(tone, 8000, 16000)
  assert up.dtype == np.int16 and len(up) == 1600
  ideal = 10000 * np.sin(2 * np.pi * 440 * np.arange(1600) / 16000)
  inner = slice(100, 1500)  # away from the filter's edge effects
  assert np.corrcoef(up[inner], ideal[inner])[0, 1] > 0.999
  np.testing.assert_array_equal(audio.resample(tone, 8000, 8000), tone)


def test_fit_length_pads_and_crops():
  x = np.arange(1, 6, dtype=np.int16)
  assert audio.fit_length(x, 8, "end").tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
  assert audio.fit_length(x, 8, "centre").tolist() == [0, 1, 2, 3, 4, 5, 0, 0]
  assert audio.fit_length(x, 3, "end").tolist() == [1, 2, 3]
  assert audio.fit_length(x, 3, "centre").tolist() == [2, 3, 4]


# ----------------------------------------------------------------------------------------------- loaders
def test_wav_folder_loader_resamples_pads_and_splits(tmp_path):
  clips = {
    f"c{i:02d}.wav": (_noise(n, i), rate)
    for i, (n, rate) in enumerate([(4000, 8000), (7000, 16000), (20000, 16000)] * 4)
  }
  for name, (pcm, rate) in clips.items():
    (tmp_path / name).write_bytes(_wav_bytes(pcm, rate))
  ds = data.load({"name": "wav_folder", "path": str(tmp_path), "sample_rate": 16000, "length": 16000})
  assert (ds.kind, ds.shape, ds.num_classes, ds.sample_rate) == ("audio", (16000,), 65536, 16000)
  assert ds.num_train_items == 11 and len(ds.eval_items("test")) == 1
  every = np.concatenate([ds.eval_items("train"), ds.eval_items("test")])
  # The 16 kHz clip of 7,000 samples is centred exactly: 4,500 silent samples (class 32768) on each side.
  want = audio.pcm_to_classes(np.pad(clips["c01.wav"][0], (4500, 4500)))
  assert any(np.array_equal(row, want) for row in every)
  batch = ds.train_batch(3, 4, seed=0)
  assert batch.shape == (4, 16000) and batch.dtype == np.int32

  split_root = tmp_path / "splits"
  for split, n in (("train", 3), ("test", 2)):
    (split_root / split).mkdir(parents=True)
    for i in range(n):
      (split_root / split / f"{i}.wav").write_bytes(_wav_bytes(_noise(500, i), 8000))
  ds = data.load({"name": "wav_folder", "path": str(split_root), "sample_rate": 8000, "length": 400, "bits": 8})
  assert ds.num_classes == 256 and ds.shape == (400,) and len(ds.eval_items("test")) == 2
  (split_root / "test" / "1.wav").unlink()
  (split_root / "test" / "0.wav").unlink()
  with pytest.raises(ValueError, match="no .wav"):
    data.load({"name": "wav_folder", "path": str(split_root)})
  with pytest.raises(ValueError, match="data.path"):
    data.load({"name": "wav_folder"})


def test_fsdd_loader_uses_the_official_split():
  path = SHARED_DATA / "fsdd"
  if not path.is_dir():
    if os.environ.get("CI") == "true":
      pytest.fail(f"shared data folder {path} is missing in CI")
    pytest.skip(f"{path} not present")
  ds = data.load({"name": "fsdd", "path": str(path), "sample_rate": 8000, "length": 8000})
  assert (ds.shape, ds.num_classes, ds.num_train_items) == ((8000,), 65536, 2250)
  test = ds.eval_items("test")
  assert test.shape == (250, 8000)
  # At the native rate the first test clip is the first recording, centred bit-exactly.
  with np.load(path / "fsdd_8khz.npz") as npz:
    first = npz["audio"][npz["offsets"][0] : npz["offsets"][1]]
    assert npz["index"][0] == 0
  np.testing.assert_array_equal(test[0], audio.pcm_to_classes(audio.fit_length(first, 8000, "centre")))


def _fake_speech_commands(path):
  files = {
    "zero/a_nohash_0.wav": _noise(16000, 0),
    "zero/b_nohash_0.wav": _noise(12000, 1),
    "one/c_nohash_0.wav": _noise(16000, 2),
    "nine/d_nohash_0.wav": _noise(9000, 3),
    "cat/e_nohash_0.wav": _noise(16000, 4),
    "_background_noise_/noise.wav": _noise(16000, 5),
  }
  lists = {
    "validation_list.txt": b"one/c_nohash_0.wav\ncat/e_nohash_0.wav\n",
    "testing_list.txt": b"nine/d_nohash_0.wav\n",
  }
  with tarfile.open(path, "w:gz") as tar:
    for name, content in [(k, _wav_bytes(v)) for k, v in files.items()] + list(lists.items()):
      info = tarfile.TarInfo("./" + name)
      info.size = len(content)
      tar.addfile(info, io.BytesIO(content))
  return files


def test_sc09_split_and_examples_from_an_archive(tmp_path):
  files = _fake_speech_commands(tmp_path / audio.SC09_ARCHIVE)
  lists = audio.sc09_split_lists(audio.iter_tar(tmp_path / audio.SC09_ARCHIVE))
  got = {
    split: dict(audio.sc09_examples(audio.iter_tar(tmp_path / audio.SC09_ARCHIVE), split, lists))
    for split in ("train", "validation", "test")
  }
  assert {s: sorted(v) for s, v in got.items()} == {
    "train": ["zero/a_nohash_0.wav", "zero/b_nohash_0.wav"],
    "validation": ["one/c_nohash_0.wav"],
    "test": ["nine/d_nohash_0.wav"],
  }
  padded = got["train"]["zero/b_nohash_0.wav"]
  assert padded["label"] == "zero" and padded["audio"].shape == (16000,)
  np.testing.assert_array_equal(padded["audio"][:12000], files["zero/b_nohash_0.wav"])
  assert not padded["audio"][12000:].any()


def test_sc09_tfds_build_and_load(tmp_path):
  """The builder prepares from the archive in tfds's manual folder; load_sc09 reads it back as classes."""
  tfds = pytest.importorskip("tensorflow_datasets")
  manual = tmp_path / "manual"
  manual.mkdir()
  files = _fake_speech_commands(manual / audio.SC09_ARCHIVE)
  with pytest.raises(ValueError, match="not prepared"):
    data.load({"name": "sc09", "tfds_data_dir": str(tmp_path / "tfds")})
  builder = audio.sc09_builder_class()(data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  ds = data.load({"name": "sc09", "tfds_data_dir": str(tmp_path / "tfds")})
  assert (ds.kind, ds.shape, ds.num_classes) == ("audio", (16000,), 65536)
  assert {s: len(ds.eval_items(s)) for s in ds.splits} == {"train": 2, "validation": 1, "test": 1}
  np.testing.assert_array_equal(
    ds.eval_items("test")[0], audio.pcm_to_classes(audio.fit_length(files["nine/d_nohash_0.wav"], 16000, "end"))
  )


# ----------------------------------------------------------------------------------------------- DiffWave
DW_CFG = dict(name="diffwave", num_blocks=3, features=16, dilation_cycle=2)
L, K = 32, 256


def _random_params(abstract, seed=1):
  """Random params of the right shapes, drawn on the host: the real init zeroes the output layer (hiding the
  dependence structure probed here) and compiling its initialisers is slow."""
  leaves, treedef = jax.tree.flatten(nn.unbox(abstract)["params"])
  rng = np.random.default_rng(seed)
  return {"params": treedef.unflatten([jnp.asarray(0.3 * rng.normal(size=leaf.shape), jnp.float32) for leaf in leaves])}


def _inputs(batch=2, seed=0):
  kx, km = jax.random.split(jax.random.key(seed))
  known = jax.random.bernoulli(km, 0.5, (batch, L))
  x_in = jnp.where(known, jax.random.randint(kx, (batch, L), 0, K), K).astype(jnp.int32)
  return x_in, known, known.sum(-1).astype(jnp.int32)


def test_diffwave_interface_and_annotations():
  # Traced only (jax.eval_shape): compiling the real initialisers costs seconds and tells nothing more here.
  x_in, known, t = _inputs()
  net = build_network(
    ml_collections.ConfigDict(DW_CFG), (L,), K, num_outputs=12, num_input_classes=K + 9, num_steps=3 * L
  )
  out, variables = jax.eval_shape(lambda: net.init_with_output({"params": jax.random.key(0)}, x_in, known, t))
  assert out.shape == (2, L, 12) and out.dtype == jnp.float32
  boxed = jax.tree.leaves(variables["params"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
  for leaf in boxed:
    assert isinstance(leaf, nn.Partitioned) and set(leaf.names) <= set(layers.PARAM_AXIS_NAMES)
  assert variables["params"]["input_embed"]["embedding"].value.shape == (K + 9, DW_CFG["features"] // 4)
  # The defaults are the OA-ARDM contract: K logits per sample, K + 1 input ids.
  plain = build_network(ml_collections.ConfigDict(DW_CFG), (L,), K)
  out, variables = jax.eval_shape(lambda: plain.init_with_output({"params": jax.random.key(0)}, x_in, known, t))
  assert out.shape == (2, L, K)
  assert variables["params"]["input_embed"]["embedding"].value.shape[0] == K + 1


def test_diffwave_receptive_field_and_conditioning():
  net = build_network(ml_collections.ConfigDict(DW_CFG), (L,), K, num_outputs=4)
  x_in, known, t = _inputs(batch=1)
  params = _random_params(jax.eval_shape(lambda: net.init({"params": jax.random.key(0)}, x_in, known, t)))
  apply = jax.jit(lambda x, m, s: net.apply(params, x, m, s))
  base = np.asarray(apply(x_in, known, t))
  j = 12
  changed = np.asarray(apply(x_in.at[0, j].set((x_in[0, j] + 7) % (K + 1)), known, t))
  moved = np.flatnonzero(np.abs(changed - base).max(-1)[0] > 0)
  # Width-3 input conv (radius 1) + dilations 1, 2, 1 (radius 4): exactly positions j-5..j+5 can change.
  assert moved.min() >= j - 5 and moved.max() <= j + 5 and {j - 5, j + 5} <= set(moved.tolist())
  assert np.abs(np.asarray(apply(x_in, known, t + 5)) - base).max() > 0
  assert np.abs(np.asarray(apply(x_in, ~known, t)) - base).max() > 0


def test_diffwave_bad_config_is_a_value_error():
  x_in, known, t = _inputs()
  with pytest.raises(ValueError, match="divisible by 4"):
    build_network(ml_collections.ConfigDict({**DW_CFG, "features": 18}), (L,), K).init(
      {"params": jax.random.key(0)}, x_in, known, t
    )
  with pytest.raises(ValueError, match="unknown network size option"):
    build_network(ml_collections.ConfigDict(DW_CFG), (L,), K, num_logits=3)
  with pytest.raises(ValueError, match="data_shape"):
    build_network(ml_collections.ConfigDict(DW_CFG), (L, 1), K)
