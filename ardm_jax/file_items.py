"""Files <-> items for `ardm compress` / `ardm decompress`: reading inputs, tiling them into items of the model's
shape, the file table stored in the container, and writing the decoded files back.

Inputs (per file)
-----------------
  image models  .png (8-bit grayscale or RGB, values on the model's K levels) or .npy (integer class values,
                [H, W], [H, W, C] or a stack [N, H, W, C]); any height and width: an image is padded at the
                bottom and right by repeating its last row / column to a multiple of the model's height and
                width and cut into tiles of the model's shape, row-major.
  text models   .txt in UTF-8 on the model's alphabet (text8: ' ' and 'a'..'z'); one trailing newline is
                allowed and restored; the text is padded with the alphabet's first symbol to a multiple of the
                model's length and cut into tiles.
  audio models  .wav, 16-bit PCM mono at the model's sample rate; any length: the clip is padded with silence
                (PCM 0) to a multiple of the model's length L and cut into L-sample tiles; decompression writes
                a 16-bit mono .wav at the same rate and the original length. A model with bits < 16 codes the
                bits most significant bits, so it takes only clips whose low 16 - bits bits are zero (exactness).

File table (stored only when needed; `coding` keeps it as opaque bytes in the header, covered by the CRCs)
----------------------------------------------------------------------------------------------------------
Absent: every item is one file, a PNG of exactly the model's shape (image models), exactly the model's
length of text without a newline (text models) or a WAV of exactly L samples (audio models); decompression
names them item_0000.png / .txt / .wav ...
Present:

    num_files      varint    F >= 1
    per file:
      tag          1 byte    bits 0-1 format (0 PNG, 1 NPY, 2 TXT, 3 WAV); bit 2 a name follows; bit 3 (TXT)
                             the text ended with a newline; bits 4-7 zero
      PNG          varint H, varint W                       original size (channels are the model's)
      NPY          1 byte dtype code, varint ndim (2..4), varint dims   (codes: u1 i1 u2 i2 u4 i4 u8 i8)
      TXT          varint number of characters
      WAV          varint number of samples (the rate is the model's)
      name         varint byte length + UTF-8 (a plain file name, no directories), only with tag bit 2

The tiles per file follow from the sizes, and their sum must equal the container's item count.
"""

from __future__ import annotations

import dataclasses
import os
import wave

import numpy as np
from PIL import Image

from ardm_jax.coding import container
from ardm_jax.data.audio import pcm_to_classes
from ardm_jax.file_io import from_uint8, to_uint8

FORMATS = ("png", "npy", "txt", "wav")
KIND_FORMATS = {"image": ("png", "npy"), "text": ("txt",), "audio": ("wav",)}
NPY_DTYPES = ("|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8")
MAX_NAME_BYTES = 255
PCM_BITS = 16


# --------------------------------------------------------------------------------------------------------------
# Files <-> items


@dataclasses.dataclass
class FileEntry:
  """One input/output file and how its items tile it."""

  fmt: str  # 'png' | 'npy' | 'txt' | 'wav'
  size: tuple  # png: (H, W); npy: the array shape; txt: (num_chars,); wav: (num_samples,)
  dtype: str | None = None  # npy only, one of NPY_DTYPES
  newline: bool = False  # txt only
  name: str | None = None
  data: np.ndarray | None = None  # png [H, W, C] / npy as stored / txt ids [num_chars] / wav classes [samples]

  def num_items(self, shape: tuple) -> int:
    if self.fmt in ("txt", "wav"):
      return max(1, -(-self.size[0] // shape[0]))
    h, w = shape[0], shape[1]
    if self.fmt == "png":
      H, W = self.size
      stack = 1
    else:
      stack = self.size[0] if len(self.size) == 4 else 1
      H, W = self.size[-3:-1] if len(self.size) == 4 else self.size[:2]
    return stack * -(-H // h) * -(-W // w)

  def is_default(self, shape: tuple) -> bool:
    if self.name is not None:
      return False
    if self.fmt == "png":
      return self.size == tuple(shape[:2]) and shape[-1] in (1, 3)
    return self.fmt in ("txt", "wav") and self.size == tuple(shape) and not self.newline


def _tiles(image_HxWxC: np.ndarray, h: int, w: int) -> np.ndarray:
  """Pads bottom/right by edge replication to multiples of (h, w); tiles [nh * nw, h, w, C], row-major."""
  H, W, C = image_HxWxC.shape
  nh, nw = -(-H // h), -(-W // w)
  padded = np.pad(image_HxWxC, ((0, nh * h - H), (0, nw * w - W), (0, 0)), mode="edge")
  return padded.reshape(nh, h, nw, w, C).transpose(0, 2, 1, 3, 4).reshape(nh * nw, h, w, C)


def _untile(tiles: np.ndarray, H: int, W: int) -> np.ndarray:
  _, h, w, C = tiles.shape
  nh, nw = -(-H // h), -(-W // w)
  return tiles.reshape(nh, nw, h, w, C).transpose(0, 2, 1, 3, 4).reshape(nh * h, nw * w, C)[:H, :W]


def _pcm_shift(spec) -> int:
  return PCM_BITS - (spec.bits or PCM_BITS)


def to_items(entry: FileEntry, spec) -> np.ndarray:
  shape = spec.shape
  if entry.fmt in ("txt", "wav"):
    L = shape[0]
    n = entry.num_items(shape)
    # Padding: the alphabet's first symbol, or silence (PCM 0 = class 2**(bits-1)); cropped on decompression.
    ids = np.full(n * L, 0 if entry.fmt == "txt" else (1 << 15) >> _pcm_shift(spec), np.int32)
    ids[: len(entry.data)] = entry.data
    return ids.reshape(n, L)
  h, w = shape[0], shape[1]
  arr = np.asarray(entry.data).astype(np.int32)
  if entry.fmt == "npy":
    arr = arr[None] if arr.ndim == 3 else arr[None, ..., None] if arr.ndim == 2 else arr
  else:
    arr = arr[None]
  return np.concatenate([_tiles(img, h, w) for img in arr])


def from_items(entry: FileEntry, items: np.ndarray, shape: tuple) -> np.ndarray:
  """The file's content (txt: ids) from its items."""
  if entry.fmt in ("txt", "wav"):
    return items.reshape(-1)[: entry.size[0]]
  if entry.fmt == "png":
    return _untile(items, *entry.size)
  size = entry.size
  images = size[0] if len(size) == 4 else 1
  H, W = (size[1], size[2]) if len(size) == 4 else (size[0], size[1])
  per = len(items) // images
  out = np.stack([_untile(items[i * per : (i + 1) * per], H, W) for i in range(images)])
  return out.reshape(size).astype(np.dtype(entry.dtype))


def _read_png(spec, path: str) -> FileEntry:
  C, K = spec.shape[-1], spec.num_classes
  try:
    with Image.open(path) as img:
      if img.format != "PNG":
        raise ValueError(f"{path} is a {img.format} file, not a PNG; convert it to PNG (or .npy) first")
      if img.mode == "1":
        img = img.convert("L")
      elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
      if img.mode not in ("L", "RGB"):
        raise ValueError(
          f"{path} is a {img.mode} PNG; lossless coding takes 8-bit grayscale (L) or RGB PNGs without alpha"
        )
      pixels = np.asarray(img)
  except OSError as e:
    raise ValueError(f"{path} cannot be read as an image ({e})") from None
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if C == 1 and pixels.shape[-1] == 3 and np.all(pixels == pixels[..., :1]):
    pixels = pixels[..., :1]  # grey RGB: exactly representable; written back as 8-bit grayscale
  if pixels.shape[-1] != C:
    raise ValueError(
      f"{path} has {pixels.shape[-1]} channel(s) but the model codes {C}; convert it to "
      f"{'grayscale' if C == 1 else 'RGB'} first"
    )
  values = from_uint8(pixels, K)
  bad = np.argwhere(to_uint8(values, K) != pixels)
  if len(bad):
    r, c, ch = bad[0]
    raise ValueError(
      f"{path}: pixel value {pixels[r, c, ch]} at row {r}, column {c} is not one of the model's "
      f"{K} levels round(k * 255 / {K - 1}); quantise the image to those levels (or pass .npy class "
      "values) first"
    )
  return FileEntry("png", tuple(pixels.shape[:2]), data=values)


def _read_npy(spec, path: str) -> FileEntry:
  try:
    arr = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} cannot be read as a .npy array ({e})") from None
  if not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{path} holds {arr.dtype} values; store integer class values 0..{spec.num_classes - 1}")
  C = spec.shape[-1]
  ok = (arr.ndim == 2 and C == 1) or (arr.ndim in (3, 4) and arr.shape[-1] == C)
  if not ok or 0 in arr.shape:
    raise ValueError(
      f"{path} has shape {arr.shape}; image .npy inputs are [H, W{', C' if C == 1 else ''}], "
      f"[H, W, {C}] or a stack [N, H, W, {C}] for this model"
    )
  if arr.min() < 0 or arr.max() >= spec.num_classes:
    raise ValueError(f"{path} has values {arr.min()}..{arr.max()}, outside the model's 0..{spec.num_classes - 1}")
  dtype = arr.dtype.newbyteorder("<").str if arr.dtype.itemsize > 1 else arr.dtype.str
  return FileEntry("npy", tuple(int(d) for d in arr.shape), dtype=dtype, data=arr)


def _read_txt(spec, path: str) -> FileEntry:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not UTF-8 text (byte {e.start}); text models code text files") from None
  newline = text.endswith("\n")
  text = text[:-1] if newline else text
  codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
  table = np.full(max(int(codes.max(initial=0)), max(map(ord, spec.alphabet))) + 1, -1, np.int64)
  table[[ord(ch) for ch in spec.alphabet]] = np.arange(len(spec.alphabet))
  ids = table[codes]
  bad = np.flatnonzero(ids < 0)
  if len(bad):
    i = int(bad[0])
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    raise ValueError(
      f"{path}: character {text[i]!r} at line {line}, column {col} is not in the model's alphabet "
      f"{spec.alphabet!r}; only these characters (and one final newline) can be coded, so normalise "
      "the text first (e.g. lowercase letters and single spaces for text8)"
    )
  return FileEntry("txt", (len(ids),), newline=newline, data=ids.astype(np.int32))


def _read_wav(spec, path: str) -> FileEntry:
  rate, bits = int(spec.sample_rate), spec.bits or PCM_BITS
  expects = f"this model codes 16-bit PCM mono WAV at {rate} Hz"
  try:
    with wave.open(path, "rb") as w:
      channels, width, got_rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
      raw = w.readframes(frames)
  except (wave.Error, EOFError, OSError) as e:
    raise ValueError(f"{path} is not a readable PCM WAV file ({e}); {expects}") from None
  if (channels, width, got_rate) != (1, 2, rate):
    raise ValueError(
      f"{path} has {channels} channel(s) of {8 * width}-bit samples at {got_rate} Hz; {expects}: "
      f"convert it first (e.g. sox {os.path.basename(path)} -r {rate} -b 16 -c 1 out.wav)"
    )
  if len(raw) != 2 * frames:
    raise ValueError(
      f"{path} is truncated: its header announces {frames} samples, the file holds "
      f"{len(raw) // 2}; repair or re-export it"
    )
  pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
  shift = PCM_BITS - bits
  low = np.flatnonzero(pcm.astype(np.int32) & ((1 << shift) - 1))
  if len(low):  # pcm_to_classes would drop these bits: the clip could not come back exactly
    i = int(low[0])
    raise ValueError(
      f"{path}: sample {i} ({pcm[i]}) is not a multiple of {1 << shift}; this model codes "
      f"{bits}-bit audio, so only clips quantised to {bits} bits come back exactly: quantise it "
      "first or use a 16-bit model"
    )
  return FileEntry("wav", (len(pcm),), data=pcm_to_classes(pcm, bits))


def read_input(spec, path: str) -> FileEntry:
  """One input file as a FileEntry of the model's kind; unsupported or lossy inputs are refused clearly."""
  ext = os.path.splitext(path)[1].lower()
  if not os.path.isfile(path):
    raise ValueError(f"input file {path} does not exist")
  if spec.kind not in KIND_FORMATS:
    raise ValueError(
      f"this workdir's model codes {spec.kind} data; ardm compress supports image, text and audio models"
    )
  if spec.kind == "audio":
    if ext == ".wav":
      return _read_wav(spec, path)
    raise ValueError(f"{path}: audio models take .wav inputs (16-bit PCM mono at {spec.sample_rate} Hz)")
  if ext == ".wav":
    wanted = ".png/.npy" if spec.kind == "image" else ".txt"
    raise ValueError(
      f"{path}: WAV audio needs an audio model, but this workdir's model codes {spec.kind}: give it {wanted} files"
    )
  if spec.kind == "image":
    if ext == ".png":
      return _read_png(spec, path)
    if ext == ".npy":
      return _read_npy(spec, path)
    if ext == ".txt":
      raise ValueError(f"{path} is text but this workdir's model codes images; use a text model's workdir")
    raise ValueError(f"{path}: image models take .png or .npy inputs")
  if ext == ".txt":
    return _read_txt(spec, path)
  raise ValueError(f"{path}: text models take .txt inputs (text on the model's alphabet)")


def _default_name(i: int, fmt: str) -> str:
  return f"item_{i:04d}.{fmt}"


def encode_file_table(entries: list[FileEntry], shape: tuple) -> bytes:
  """The compact file table (see the module docstring), or b"" when every file is a default one."""
  if all(e.is_default(shape) for e in entries):
    return b""
  out = [container.varint_bytes(len(entries))]
  for e in entries:
    tag = FORMATS.index(e.fmt) | (4 if e.name is not None else 0) | (8 if e.newline else 0)
    out.append(bytes([tag]))
    if e.fmt == "npy":
      out.append(bytes([NPY_DTYPES.index(e.dtype)]) + container.varint_bytes(len(e.size)))
    out.extend(container.varint_bytes(d) for d in e.size)
    if e.name is not None:
      name = e.name.encode("utf-8")
      out.append(container.varint_bytes(len(name)) + name)
  return b"".join(out)


def _check_name(name: str) -> str:
  if not name or name in (".", "..") or any(ch in name for ch in "/\\\0") or len(name.encode()) > MAX_NAME_BYTES:
    raise ValueError(f"{name!r} is not a plain file name")
  return name


def decode_file_table(table: bytes, spec, num_items: int) -> list[FileEntry]:
  """Parses a file table and checks it against the model and the item count; ContainerError otherwise."""
  shape = spec.shape
  if not table:
    if spec.kind == "image" and shape[-1] not in (1, 3):
      raise container.ContainerError("corrupt file: no file table, but this model's items cannot be PNGs")
    fmt = KIND_FORMATS[spec.kind][0]
    return [FileEntry(fmt, tuple(shape[:2]) if fmt == "png" else tuple(shape)) for _ in range(num_items)]
  r = container.Reader(bytes(table))
  num_files = r.varint("number of files")
  if not 1 <= num_files <= num_items:
    raise container.ContainerError(f"corrupt file table: {num_files} files for {num_items} items")
  entries, total, names = [], 0, set()
  for j in range(num_files):
    tag = r.take(1, f"tag of file {j}")[0]
    fmt_i = tag & 3
    if tag >> 4 or fmt_i >= len(FORMATS) or (tag & 8 and fmt_i != 2):
      raise container.ContainerError(f"corrupt file table: bad tag 0x{tag:02x} for file {j}")
    fmt = FORMATS[fmt_i]
    if fmt not in KIND_FORMATS.get(spec.kind, ()):
      raise container.ContainerError(f"corrupt file table: a {fmt} file cannot come from a {spec.kind} model")
    dtype = None
    if fmt == "npy":
      code = r.take(1, f"dtype of file {j}")[0]
      if code >= len(NPY_DTYPES):
        raise container.ContainerError(f"corrupt file table: unknown dtype code {code}")
      dtype = NPY_DTYPES[code]
      ndim = r.varint(f"ndim of file {j}")
      if not 2 <= ndim <= 4:
        raise container.ContainerError(f"corrupt file table: a .npy with {ndim} dimensions")
      size = tuple(r.varint(f"size of file {j}") for _ in range(ndim))
      C = shape[-1]
      if not ((ndim == 2 and C == 1) or (ndim in (3, 4) and size[-1] == C)):
        raise container.ContainerError(f"corrupt file table: .npy shape {size} does not fit the model")
    else:
      size = tuple(r.varint(f"size of file {j}") for _ in range(2 if fmt == "png" else 1))
    if (fmt not in ("txt", "wav") and min(size) < 1) or (fmt == "png" and shape[-1] not in (1, 3)):
      raise container.ContainerError(f"corrupt file table: implausible size {size} for file {j}")
    entry = FileEntry(fmt, size, dtype=dtype, newline=bool(tag & 8))
    total += entry.num_items(shape)
    if total > num_items:
      raise container.ContainerError(f"corrupt file table: its files need more than the {num_items} items stored")
    if tag & 4:
      raw = r.take(r.varint(f"name length of file {j}"), f"name of file {j}")
      try:
        entry.name = _check_name(raw.decode("utf-8"))
      except (UnicodeDecodeError, ValueError):
        raise container.ContainerError(f"corrupt file table: file {j} has an unsafe or invalid name") from None
      if entry.name in names:
        raise container.ContainerError(f"corrupt file table: the name {entry.name!r} appears twice")
      names.add(entry.name)
    entries.append(entry)
  if total != num_items or r.pos != len(r.data):
    raise container.ContainerError(
      f"corrupt file table: its files need {total} items, the container holds {num_items}"
      if total != num_items
      else "corrupt file table: trailing bytes"
    )
  return entries


def output_names(entries: list[FileEntry]) -> list[str]:
  return [e.name if e.name is not None else _default_name(i, e.fmt) for i, e in enumerate(entries)]


def write_entry(spec, entry: FileEntry, content: np.ndarray, path: str, overwrite: bool) -> None:
  with open(path, "wb" if overwrite else "xb") as f:
    if entry.fmt == "png":
      pixels = to_uint8(content, spec.num_classes)
      Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(f, format="PNG")
    elif entry.fmt == "npy":
      np.save(f, content, allow_pickle=False)
    elif entry.fmt == "wav":
      # The exact inverse of _read_wav: classes back to their 16-bit samples (low bits zero for bits < 16).
      pcm = ((content.astype(np.int32) << _pcm_shift(spec)) - 32768).astype("<i2")
      with wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(spec.sample_rate))
        w.writeframes(pcm.tobytes())
    else:
      text = "".join(np.array(list(spec.alphabet))[content].tolist()) + ("\n" if entry.newline else "")
      f.write(text.encode("utf-8"))


def read_inputs(spec, paths: list[str], keep_names: bool = False) -> list[FileEntry]:
  """All inputs checked and read (see `read_input`); with `keep_names` their base names are kept."""
  if not paths:
    raise ValueError("no input files given")
  entries = [read_input(spec, p) for p in paths]
  if keep_names:
    for e, p in zip(entries, paths):
      e.name = _check_name(os.path.basename(p))
    seen = [e.name for e in entries]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup is not None:
      raise ValueError(f"two inputs are both named {dup!r}; --keep-names needs distinct file names")
  return entries
