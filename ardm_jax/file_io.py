"""Items <-> files for the jobs: PNG grids and images, text lines, WAV folders, known-masks, uint8 levels.

An item is an int array of class values in the model's shape (`DataSpec.shape`); images are stored as 8-bit
pixels with the K classes spread over 0..255 (`to_uint8` / `from_uint8`, exact inverses on their outputs).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ardm_jax.data import audio

UNKNOWN_CHAR = "_"  # marks the characters to fill in a text input


def to_uint8(images: np.ndarray, num_classes: int) -> np.ndarray:
  """Class values 0..K-1 spread over 0..255 for viewing (exact identity for K = 256)."""
  if num_classes == 256:
    return images.astype(np.uint8)
  return np.round(images.astype(np.float64) * 255.0 / (num_classes - 1)).astype(np.uint8)


def from_uint8(pixels: np.ndarray, num_classes: int) -> np.ndarray:
  """Inverse of to_uint8 (exact on its outputs)."""
  if num_classes == 256:
    return pixels.astype(np.int32)
  return np.round(pixels.astype(np.float64) * (num_classes - 1) / 255.0).astype(np.int32)


def image_grid(images: np.ndarray, num_classes: int, pad: int = 1) -> np.ndarray:
  """[N, H, W, C] -> one padded uint8 grid image, as square as possible."""
  n, h, w, c = images.shape
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  pixels = to_uint8(images, num_classes)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = pixels[i]
  return grid


def unused_path(base: str, ext: str = "") -> str:
  """BASE+EXT, else BASE-1+EXT, BASE-2+EXT, ...: the first name that does not exist.

  The one rule for the default outputs of the jobs in a workdir (eval results, samples): their names carry the
  checkpoint step and never replace an earlier file, so a rerun (the quick start's, say) adds a result instead of
  replacing one. An explicit --out is never replaced without --overwrite (`check_writable`).
  """
  path, i = base + ext, 1
  while os.path.exists(path):
    path, i = f"{base}-{i}{ext}", i + 1
  return path


def check_writable(path: str, overwrite: bool) -> None:
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; choose another --out or pass --overwrite to replace it")


def write_items(spec, items: np.ndarray, path: str, overwrite: bool = False, scale: int = 1) -> str:
  """PNG grid for images (upscaled `scale` times for visibility), one line per item for text, a folder of WAVs
  for audio."""
  check_writable(path, overwrite)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if spec.kind == "image":
    grid = image_grid(items, spec.num_classes)
    if scale > 1:
      grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  elif spec.kind == "text":
    with open(path, "w", encoding="ascii") as f:
      for row in items:
        f.write("".join(spec.alphabet[int(v)] for v in row) + "\n")
  elif spec.kind == "audio":  # `path` is a folder: one 16-bit WAV per item
    os.makedirs(path, exist_ok=True)
    audio.write_wav_items(path, items, spec.sample_rate, spec.bits)
  else:
    raise ValueError(f"cannot write items of kind {spec.kind!r}")
  return path


def read_image_input(spec, path: str) -> np.ndarray:
  """An image input (.png or .npy of class values) of the model's shape."""
  if path.endswith(".npy"):
    item = np.load(path, allow_pickle=False)
    if item.ndim == len(spec.shape) - 1:
      item = item[..., None]
    values = item.astype(np.int64)
  elif path.lower().endswith(".png"):
    with Image.open(path) as img:
      pixels = np.asarray(img.convert("L" if spec.shape[-1] == 1 else "RGB"))
    if pixels.ndim == 2:
      pixels = pixels[..., None]
    values = from_uint8(pixels, spec.num_classes)
  else:
    raise ValueError(f"{path}: image inputs must be .png or .npy")
  if values.shape != spec.shape:
    raise ValueError(f"{path} has shape {values.shape} but the model takes {spec.shape}")
  if values.min() < 0 or values.max() >= spec.num_classes:
    raise ValueError(f"{path} has values outside 0..{spec.num_classes - 1}")
  return values.astype(np.int32)


def read_mask(spec, path: str | None) -> np.ndarray:
  """Known-mask for an image: a .png/.npy (non-zero = given) of H x W or H x W x C; default: the top half."""
  if path is None:
    mask = np.zeros(spec.shape, bool)
    mask[: spec.shape[0] // 2] = True
    return mask
  if path.endswith(".npy"):
    raw = np.load(path, allow_pickle=False)
  else:
    with Image.open(path) as img:
      raw = np.asarray(img.convert("L"))
  raw = np.asarray(raw) != 0
  if raw.shape == spec.shape[:-1]:
    raw = np.repeat(raw[..., None], spec.shape[-1], axis=-1)
  if raw.shape != spec.shape:
    raise ValueError(f"mask {path} has shape {raw.shape}; it must be {spec.shape[:-1]} or {spec.shape}")
  return raw


def read_text_input(spec, path: str) -> tuple[np.ndarray, np.ndarray]:
  """Text with '_' at unknown characters; a shorter text is continued to the model's length."""
  with open(path, encoding="utf-8") as f:
    text = f.read().rstrip("\n")
  length = spec.shape[0]
  if len(text) > length:
    raise ValueError(f"{path} has {len(text)} characters but the model takes at most {length}")
  ids = np.zeros(spec.shape, np.int32)
  observed = np.zeros(spec.shape, bool)
  for i, ch in enumerate(text):
    if ch == UNKNOWN_CHAR:
      continue
    if ch not in spec.alphabet:
      raise ValueError(
        f"{path}: character {ch!r} at position {i} is not in the model's alphabet "
        f"{spec.alphabet!r}; use '{UNKNOWN_CHAR}' for unknown characters"
      )
    ids[i] = spec.alphabet.index(ch)
    observed[i] = True
  return ids, observed


def parse_gap(text: str, sample_rate: int) -> tuple[int, int]:
  """'START:END' in seconds -> the sample range [start, end) to regenerate."""
  start_s, sep, end_s = text.partition(":")
  try:
    start, end = float(start_s), float(end_s)
  except ValueError:
    start = end = float("nan")
  if not sep or not 0 <= start < end:
    raise ValueError(f"--gap {text!r} must be START:END in seconds with 0 <= START < END, e.g. --gap 0.25:0.5")
  return round(start * sample_rate), round(end * sample_rate)


def read_audio_input(spec, path: str, gap: str | None) -> tuple[np.ndarray, np.ndarray]:
  """A 16-bit mono WAV at the model's rate and its known-mask: the samples in --gap and those past the clip's end
  (a shorter clip is continued to the model's length) are to be generated."""
  pcm, rate = audio.read_wav(path)
  length = spec.shape[0]
  if rate != spec.sample_rate:
    raise ValueError(
      f"{path} is sampled at {rate} Hz but the model takes {spec.sample_rate} Hz; resample it first "
      f"(e.g. sox {os.path.basename(path)} -r {spec.sample_rate} out.wav)"
    )
  if len(pcm) > length:
    raise ValueError(
      f"{path} has {len(pcm)} samples but the model takes at most {length} ({length / rate:g} s); cut it first"
    )
  item = np.zeros(spec.shape, np.int32)
  item[: len(pcm)] = audio.pcm_to_classes(pcm, spec.bits or audio.PCM_BITS)
  observed = np.zeros(spec.shape, bool)
  observed[: len(pcm)] = True
  if gap is not None:
    start, end = parse_gap(gap, rate)
    if start >= len(pcm):
      raise ValueError(f"--gap {gap} starts after the clip's end ({len(pcm) / rate:g} s); choose a gap inside it")
    observed[start:end] = False
  if observed.all():
    raise ValueError(f"{path} fills the model's {length} samples: pass --gap START:END (seconds) to regenerate")
  return item, observed


def completion_path(input_path: str, spec) -> str:
  """Beside the input: NAME.completed.png | .txt, or the folder NAME.completed/ of WAVs for audio."""
  stem, _ = os.path.splitext(input_path)
  return stem + {"image": ".completed.png", "text": ".completed.txt", "audio": ".completed"}[spec.kind]
