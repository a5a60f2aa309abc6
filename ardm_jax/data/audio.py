"""Audio sources: SC09 (a tfds builder), a folder of 16-bit WAVs, and the FSDD spoken digits (.npz); WAV I/O.

An audio item is a mono clip of `data.length` samples (default: 1 s at `data.sample_rate`, default 16 kHz),
shape (L,). A 16-bit sample s in -32768..32767 is the class s + 32768, so K = 65,536 (SC09 in the paper); with
`data.bits` = b < 16 only the b most significant bits are kept (K = 2**b) for cheap runs. Clips recorded at another
rate are resampled with scipy.signal.resample_poly; shorter clips are padded with silence, longer ones cropped.

Sources and their `config.data` keys (defaults in brackets; every source also takes sample_rate [16000],
length [sample_rate] and bits [16]):

  name='sc09'        tfds builder `sc09` (registered by `sc09_builder_class()`): the ten digit words of Speech
                     Commands v0.02 (Warden 2018), 16 kHz, splits train / validation / test from the archive's own
                     validation_list.txt and testing_list.txt. Clips are padded at the end (as the paper's pipeline
                     does). tfds_data_dir [tfds default]; download [False]. Offline: put
                     speech_commands_v0.02.tar.gz in tfds's manual folder (<data_dir>/downloads/manual/).
  name='wav_folder'  path [required]: a folder of 16-bit PCM mono .wav files, or one with train/ and test/ (and
                     optionally validation/) subfolders of them; without subfolders a fixed 90/10 split (seed 0).
                     Clips are centred (padded or cropped on both sides).
  name='fsdd'        path [required]: fsdd_8khz.npz (Free Spoken Digit Dataset, 8 kHz) or a folder holding it;
                     the dataset's own split: takes 0-4 test, 5-49 train. Clips are centred. sample_rate=8000 keeps
                     the native rate (length 8,000) for a cheap configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import io
import math
import os
import tarfile
import wave

import numpy as np

from ardm_jax.data import tfds_util
from ardm_jax.data.base import ArrayDataset, as_int, cfg_get, fixed_split, positive_int, require_path

SAMPLE_RATE = 16000
PCM_BITS = 16
SC09_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SC09_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SC09_ARCHIVE = "speech_commands_v0.02.tar.gz"
FSDD_FILE = "fsdd_8khz.npz"
FSDD_TEST_TAKES = 5  # takes 0..4 of every speaker and digit are FSDD's official test set
HOLDOUT_SEED = 0
PAD_MODES = ("end", "centre")


# ----------------------------------------------------------------------------------------------- samples <-> classes
def _check_bits(bits) -> int:
  bits = as_int(bits, "data.bits")
  if not 1 <= bits <= PCM_BITS:
    raise ValueError(f"data.bits must be in 1..{PCM_BITS}, got {bits}")
  return bits


def pcm_to_classes(pcm, bits: int = PCM_BITS) -> np.ndarray:
  """int16 samples -> classes 0..2**bits - 1 (int32): offset to unsigned, keep the `bits` most significant bits."""
  bits = _check_bits(bits)
  pcm = np.asarray(pcm)
  if pcm.dtype != np.int16:
    raise ValueError(f"PCM samples must be int16, got {pcm.dtype}; read 16-bit audio")
  return (pcm.astype(np.int32) + 32768) >> (PCM_BITS - bits)


def classes_to_pcm(x, bits: int = PCM_BITS) -> np.ndarray:
  """Classes -> int16 samples; with bits < 16 each class maps to the centre of the samples it stands for."""
  bits = _check_bits(bits)
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() >= 1 << bits)):
    raise ValueError(f"audio classes must be integers in 0..{(1 << bits) - 1}")
  shift = PCM_BITS - bits
  centre = (1 << shift) >> 1
  return ((x.astype(np.int32) << shift) + centre - 32768).astype(np.int16)


def resample(pcm, from_rate: int, to_rate: int) -> np.ndarray:
  """int16 [L] at from_rate -> int16 at to_rate (polyphase filter; rounded and clipped to 16 bits)."""
  pcm = np.asarray(pcm)
  if from_rate == to_rate:
    return pcm.astype(np.int16)
  # Imported here: scipy.signal costs 0.3-1.8 s to import (measured), and only resampling needs it.
  from scipy.signal import resample_poly  # noqa: PLC0415

  g = math.gcd(int(from_rate), int(to_rate))
  y = resample_poly(pcm.astype(np.float64), int(to_rate) // g, int(from_rate) // g)
  return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def fit_length(pcm, length: int, mode: str = "centre") -> np.ndarray:
  """Pads with zeros (silence) or crops to `length` samples: at the end, or equally on both sides ('centre')."""
  if mode not in PAD_MODES:
    raise ValueError(f"unknown pad mode {mode!r}; use one of {PAD_MODES}")
  pcm = np.asarray(pcm, np.int16)
  n = len(pcm)
  if n >= length:
    start = 0 if mode == "end" else (n - length) // 2
    return pcm[start : start + length]
  before = 0 if mode == "end" else (length - n) // 2
  return np.pad(pcm, (before, length - n - before))


# ----------------------------------------------------------------------------------------------- WAV files
def read_wav(source) -> tuple[np.ndarray, int]:
  """16-bit PCM mono WAV (a path or a binary file object) -> (int16 samples [L], sample rate)."""
  name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "WAV data")
  try:
    with wave.open(source if not isinstance(source, os.PathLike) else os.fspath(source), "rb") as w:
      channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
      raw = w.readframes(frames)
  except (wave.Error, EOFError) as e:
    raise ValueError(f"{name!r} is not a readable PCM WAV file ({e}); convert it to 16-bit PCM mono") from None
  if width != 2 or channels != 1:
    raise ValueError(
      f"{name!r} has {channels} channel(s) of {8 * width}-bit samples; convert it to 16-bit PCM "
      f"mono (e.g. sox in.wav -b 16 -c 1 out.wav)"
    )
  return np.frombuffer(raw, dtype="<i2").astype(np.int16), rate


def write_wav(path, x, sample_rate: int, bits: int = PCM_BITS) -> None:
  """Writes classes x [L] (0..2**bits - 1) as a 16-bit PCM mono WAV."""
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"write_wav writes one clip [L], got shape {x.shape}; write a batch item by item")
  pcm = classes_to_pcm(x, bits)
  with wave.open(os.fspath(path), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(int(sample_rate))
    w.writeframes(pcm.astype("<i2").tobytes())


def write_wav_items(folder, x_NxL, sample_rate: int, bits: int = PCM_BITS, prefix: str = "sample") -> list[str]:
  """One WAV per item: folder/prefix_000.wav, ...; returns the paths."""
  x_NxL = np.asarray(x_NxL)
  if x_NxL.ndim != 2:
    raise ValueError(f"audio items must be [N, L], got shape {x_NxL.shape}")
  os.makedirs(folder, exist_ok=True)
  width = max(3, len(str(len(x_NxL) - 1)))
  paths = []
  for i, x_L in enumerate(x_NxL):
    paths.append(os.path.join(folder, f"{prefix}_{i:0{width}d}.wav"))
    write_wav(paths[-1], x_L, sample_rate, bits)
  return paths


# ----------------------------------------------------------------------------------------------- dataset
class AudioDataset(ArrayDataset):
  """Cut, equal-length clips stored as classes; `kind == 'audio'`, plus `sample_rate` and `bits`."""

  def __init__(self, name: str, splits, sample_rate: int, bits: int):
    # base.Dataset validates kinds against 'image' / 'text'; audio items are stored exactly like images (cut,
    # equal-shape integer arrays), so the base class is built as one and the kind set afterwards.
    super().__init__(name, "image", splits, 1 << bits)
    self.kind = "audio"
    self.sample_rate = int(sample_rate)
    self.bits = int(bits)


def _audio_options(data_cfg) -> tuple[int, int, int]:
  """(sample_rate, length, bits) from the config."""
  rate = positive_int(data_cfg, "sample_rate", SAMPLE_RATE)
  length = positive_int(data_cfg, "length", rate)
  return rate, length, _check_bits(cfg_get(data_cfg, "bits", PCM_BITS))


def clips_to_items(clips: Iterable[np.ndarray], native_rate, data_cfg, pad: str) -> np.ndarray:
  """Raw int16 clips (one rate for all, or one per clip) -> classes [N, length] per the config."""
  rate, length, bits = _audio_options(data_cfg)
  clips = list(clips)
  rates = np.broadcast_to(np.asarray(native_rate), (len(clips),))
  items = np.empty((len(clips), length), np.int32)
  for i, (clip, r) in enumerate(zip(clips, rates)):
    items[i] = pcm_to_classes(fit_length(resample(clip, int(r), rate), length, pad), bits)
  return items


def _dataset(name: str, split_clips: dict, data_cfg, pad: str) -> AudioDataset:
  rate, _, bits = _audio_options(data_cfg)
  splits = {split: clips_to_items(clips, native, data_cfg, pad) for split, (clips, native) in split_clips.items()}
  return AudioDataset(name, splits, rate, bits)


def load_fsdd(data_cfg) -> AudioDataset:
  """`data.path`: fsdd_8khz.npz or its folder. Split by take number: 0-4 test, 5-49 train."""
  path = require_path(data_cfg, "FSDD", f"set --config.data.path=/path/to/{FSDD_FILE} (or its folder)")
  if os.path.isdir(path):
    path = os.path.join(path, FSDD_FILE)
    if not os.path.isfile(path):
      raise ValueError(f"no {FSDD_FILE} in folder {os.path.dirname(path)!r}; point data.path at the .npz")
  try:
    with np.load(path, allow_pickle=False) as npz:
      audio, offsets, take, rate = npz["audio"], npz["offsets"], npz["index"], int(npz["sample_rate"])
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"{path!r} is not an FSDD .npz with audio/offsets/index/sample_rate ({e})") from None
  if audio.dtype != np.int16 or len(offsets) != len(take) + 1:
    raise ValueError(f"{path!r}: expected int16 audio and len(offsets) == len(index) + 1")
  clips = [audio[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
  test = take < FSDD_TEST_TAKES
  split_clips = {
    "train": ([c for c, t in zip(clips, test) if not t], rate),
    "test": ([c for c, t in zip(clips, test) if t], rate),
  }
  return _dataset("fsdd", split_clips, data_cfg, pad="centre")


def _wav_files(folder: str) -> list[str]:
  return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(".wav"))


def _read_clips(paths: list[str]) -> tuple[list[np.ndarray], list[int]]:
  clips, rates = [], []
  for p in paths:
    clip, rate = read_wav(p)
    clips.append(clip)
    rates.append(rate)
  return clips, rates


def load_wav_folder(data_cfg) -> AudioDataset:
  """`data.path`: a folder of .wav files (fixed 90/10 split) or with train/ and test/ (+ validation/) subfolders."""
  path = require_path(data_cfg, "WAV folder", "set --config.data.path=/path/to/folder_of_wavs")
  if not os.path.isdir(path):
    raise ValueError(f"data.path {path!r} is not a folder; wav_folder needs a folder of .wav files")
  split_dirs = {
    s: os.path.join(path, s) for s in ("train", "validation", "test") if os.path.isdir(os.path.join(path, s))
  }
  if split_dirs:
    if not {"train", "test"} <= set(split_dirs):
      raise ValueError(f"{path!r} has split folders {sorted(split_dirs)}; it needs both train/ and test/")
    split_clips = {}
    for split, folder in split_dirs.items():
      files = _wav_files(folder)
      if not files:
        raise ValueError(f"split folder {folder!r} holds no .wav files")
      split_clips[split] = _read_clips(files)
  else:
    files = _wav_files(path)
    if len(files) < 2:
      raise ValueError(f"{path!r} holds {len(files)} .wav files; need at least 2 (train and test)")
    train_idx, test_idx = fixed_split(len(files), max(1, len(files) // 10), HOLDOUT_SEED)
    split_clips = {
      "train": _read_clips([files[i] for i in train_idx]),
      "test": _read_clips([files[i] for i in test_idx]),
    }
  return _dataset("wav_folder", split_clips, data_cfg, pad="centre")


# ----------------------------------------------------------------------------------------------- SC09 via tfds
def _archive_path(path: str) -> str:
  return path[2:] if path.startswith("./") else path


def sc09_split_lists(archive: Iterable[tuple[str, object]]) -> dict[str, set[str]]:
  """{'validation': paths, 'test': paths} from the archive's list files (paths like 'zero/0a2b_nohash_0.wav')."""
  lists = {}
  for path, fobj in archive:
    base = os.path.basename(_archive_path(path))
    if base in ("validation_list.txt", "testing_list.txt"):
      names = fobj.read().decode("ascii").split()
      lists["validation" if base.startswith("validation") else "test"] = {_archive_path(n) for n in names}
  missing = {"validation", "test"} - set(lists)
  if missing:
    raise ValueError(f"the Speech Commands archive lacks {sorted(missing)} list file(s); use {SC09_URL}")
  return lists


def sc09_examples(
  archive: Iterable[tuple[str, object]], split: str, lists: dict[str, set[str]]
) -> Iterator[tuple[str, dict]]:
  """(key, {'audio': int16 [16000], 'label': word}) for the digit words of `split`; other words are skipped.

  A clip belongs to 'test' or 'validation' if its path is on that list, otherwise to 'train'.
  """
  for path, fobj in archive:
    rel = _archive_path(path)
    word, base = os.path.split(rel)
    if word not in SC09_WORDS or not base.endswith(".wav"):
      continue
    in_split = "test" if rel in lists["test"] else "validation" if rel in lists["validation"] else "train"
    if in_split != split:
      continue
    pcm, rate = read_wav(io.BytesIO(fobj.read()))
    if rate != SAMPLE_RATE:
      raise ValueError(f"{rel} is sampled at {rate} Hz, expected {SAMPLE_RATE}; this is not Speech Commands")
    yield rel, {"audio": fit_length(pcm, SAMPLE_RATE, "end"), "label": word}


def iter_tar(path: str) -> Iterator[tuple[str, object]]:
  """(member path, file object) for the regular files of a .tar(.gz), like tfds's iter_archive."""
  with tarfile.open(path) as tar:
    for member in tar:
      if member.isfile():
        yield member.name, tar.extractfile(member)


_SC09_BUILDER = None


def sc09_builder_class():
  """The tfds builder class `sc09` (defined, and so registered with tfds, on first call: importing tfds is slow)."""
  global _SC09_BUILDER
  if _SC09_BUILDER is not None:
    return _SC09_BUILDER
  tfds = tfds_util.import_tfds()

  class Sc09(tfds.core.GeneratorBasedBuilder):
    """SC09: the spoken digits 'zero'..'nine' of Speech Commands v0.02, 16 kHz, padded to 1 s, int16."""

    name = "sc09"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Digits of speech_commands_v0.02 with its validation/testing lists; end-padded."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Optional: without internet, place {SC09_ARCHIVE} (from {SC09_URL}) in the "
      f"manual folder; otherwise it is downloaded."
    )

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        description="The ten digit words of Speech Commands v0.02 (Warden, 2018), 16 kHz mono, padded to 1 s.",
        features=tfds.features.FeaturesDict(
          {
            "audio": tfds.features.Audio(shape=(SAMPLE_RATE,), dtype=np.int16, sample_rate=SAMPLE_RATE),
            "label": tfds.features.ClassLabel(names=list(SC09_WORDS)),
          }
        ),
        supervised_keys=("audio", "label"),
        homepage="https://arxiv.org/abs/1804.03209",
      )

    def _split_generators(self, dl_manager):
      try:
        local = os.path.join(os.fspath(dl_manager.manual_dir), SC09_ARCHIVE)
      except AssertionError:  # tfds's way of saying that no manual folder exists
        local = None
      archive = local if local and os.path.isfile(local) else os.fspath(dl_manager.download(SC09_URL))
      lists = sc09_split_lists(iter_tar(archive))
      return {split: self._generate_examples(archive, split, lists) for split in ("train", "validation", "test")}

    def _generate_examples(self, archive, split, lists):
      yield from sc09_examples(iter_tar(archive), split, lists)

  _SC09_BUILDER = Sc09
  return Sc09


def load_sc09(data_cfg) -> AudioDataset:
  """tfds `sc09`: `data.tfds_data_dir`, `data.download` [False]; splits train / validation / test."""
  data_dir = cfg_get(data_cfg, "tfds_data_dir")
  download = cfg_get(data_cfg, "download", False)
  if not isinstance(download, bool):
    raise ValueError(f"data.download must be True or False, got {download!r}")
  _audio_options(data_cfg)  # fail on a bad option before touching tfds
  sc09_builder_class()
  tfds_util.require_prepared("sc09", data_dir, download)
  split_clips = {}
  for split in ("train", "validation", "test"):
    pcm = tfds_util.load_split_numpy("sc09", split, data_dir, key="audio")
    if pcm.ndim != 2 or pcm.shape[1] != SAMPLE_RATE or pcm.dtype != np.int16:
      raise ValueError(f"tfds sc09:{split} gave audio {pcm.shape} {pcm.dtype}; expected (N, {SAMPLE_RATE}) int16")
    split_clips[split] = (list(pcm), SAMPLE_RATE)
  return _dataset("sc09", split_clips, data_cfg, pad="end")
