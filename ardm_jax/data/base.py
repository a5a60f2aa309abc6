"""Dataset classes shared by every data source.

Two storage kinds, one class each:

* `ArrayDataset`: items are already cut (images, digits). Training walks through epochs; epoch e visits every
  training item exactly once, in the order `np.random.default_rng([seed, e]).permutation(N)`. Global example j
  of the run (j = step * global_batch_size + position in the batch) is item `perm_{j // N}[j % N]`.
* `SequenceDataset`: one long id stream per split (text). Training items are random crops of `seq_len`
  symbols whose starts come from `np.random.default_rng([seed, step])`; evaluation items are the
  non-overlapping consecutive chunks of the split (a trailing partial chunk is dropped).

In both, `train_batch` is a pure function of (seed, step, process_index, process_count): it never iterates from
step 0, so a resumed run sees exactly the batches of an uninterrupted one. Every process derives the same
global batch and keeps its own contiguous slice, so the slices are disjoint and concatenate to the global batch.

Augmentation (`ArrayDataset(..., augment=...)`, from `data.augment`) touches training batches only:
'flip_rot90' is the official CIFAR-10 pipeline's `data_augmentation=True` (google-research
autoregressive_diffusion/experiments/images/datasets.py): a horizontal flip with probability 1/2, then a rotation
by k * 90 degrees counter-clockwise with k uniform on 0..3, drawn independently, so each of the 8 symmetries of the
square is equally likely. The draws for the whole global batch come from `default_rng([seed, step, AUGMENT_STREAM])`,
so example j = step * B + position gets the same transform on every process and after a resume.
"""

from __future__ import annotations

from collections.abc import Mapping
import operator
import os
from typing import Any

import numpy as np


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
  """`cfg.key`, or `default` when the key is absent or None (ConfigDict or plain dict)."""
  value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  return default if value is None else value


def as_int(value: Any, what: str) -> int:
  """Strict integer conversion: numpy / 0-d array ints pass, floats and bools are refused."""
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{what} must be an integer, got {value!r}")
  try:
    return operator.index(value)
  except TypeError:
    raise ValueError(f"{what} must be an integer, got {value!r}") from None


def positive_int(cfg: Any, key: str, default: int) -> int:
  value = as_int(cfg_get(cfg, key, default), f"data.{key}")
  if value < 1:
    raise ValueError(f"data.{key} must be >= 1, got {value}")
  return value


def require_path(data_cfg, what: str, fix: str) -> str:
  """`data.path`, user-expanded; unset or missing is an error ending in `fix`."""
  path = cfg_get(data_cfg, "path")
  if not path:
    raise ValueError(f"data.path is not set for {what}; {fix}")
  path = os.path.expanduser(str(path))
  if not os.path.exists(path):
    raise ValueError(f"{what} not found at {path!r}; {fix}")
  return path


def fixed_split(num_items: int, num_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(train_idx, test_idx), each sorted: the last `num_test` entries of a seeded permutation are the test set.

  The seed is a constant of the data source, not of the run: changing it changes which items are test items
  and breaks comparability with every published number on that split.
  """
  if not 0 < num_test < num_items:
    raise ValueError(f"cannot hold out {num_test} of {num_items} items as a test split; need more items")
  perm = np.random.default_rng(seed).permutation(num_items)
  return np.sort(perm[:-num_test]), np.sort(perm[-num_test:])


def symbols_to_ids(codes: np.ndarray, alphabet: str, hint: str, unit: str = "character") -> np.ndarray:
  """Maps code points (or bytes) to alphabet ids (uint8); the first symbol outside the alphabet is an error."""
  if len(alphabet) > 255:
    raise ValueError(f"alphabets of more than 255 symbols are not supported (got {len(alphabet)})")
  # One extra invalid entry at the end so clipping large code points never lands on a valid symbol.
  lut = np.full(max(256, max(map(ord, alphabet)) + 2), 255, np.uint8)
  for i, ch in enumerate(alphabet):
    lut[ord(ch)] = i
  codes = np.asarray(codes)
  # uint8 needs no clipping (the table has >= 256 entries); wider codes are clipped in their own dtype.
  ids = lut[codes if codes.dtype == np.uint8 else np.minimum(codes, np.asarray(len(lut) - 1, codes.dtype))]
  bad = ids == 255
  if bad.any():
    pos = int(np.argmax(bad))
    code = int(codes[pos])
    if unit == "byte" and code >= 128:
      sym = f"non-ASCII byte 0x{code:02X}"
    else:
      sym = f"character {chr(code)!r} (U+{code:04X})"
    raise ValueError(f"{sym} at {unit} position {pos} is outside the alphabet {alphabet!r}; {hint}")
  return ids


class Dataset:
  """Attributes and text helpers common to both storage kinds (see the module docstring)."""

  name: str
  kind: str  # 'image' | 'text'
  shape: tuple
  num_classes: int
  alphabet: str | None

  def __init__(self, name: str, kind: str, shape: tuple, num_classes: int, alphabet: str | None):
    if kind not in ("image", "text"):
      raise ValueError(f"dataset kind must be 'image' or 'text', got {kind!r}")
    if alphabet is not None and len(alphabet) != num_classes:
      raise ValueError(f"alphabet has {len(alphabet)} symbols but num_classes is {num_classes}")
    self.name = name
    self.kind = kind
    self.shape = tuple(int(s) for s in shape)
    self.num_classes = int(num_classes)
    self.alphabet = alphabet

  # ---- batching -------------------------------------------------------------------------------------
  @staticmethod
  def _local_range(step, global_batch_size, seed, process_index, process_count) -> tuple[int, int, int, int]:
    """Validates the batch arguments; returns (step, seed, lo, hi) of this process's slice."""
    step = as_int(step, "step")
    gbs = as_int(global_batch_size, "global_batch_size")
    seed = as_int(seed, "seed")
    pi = as_int(process_index, "process_index")
    pc = as_int(process_count, "process_count")
    if step < 0 or seed < 0:
      raise ValueError(f"step and seed must be >= 0, got step={step}, seed={seed}")
    if gbs < 1 or pc < 1:
      raise ValueError(f"global_batch_size and process_count must be >= 1, got {gbs} and {pc}")
    if gbs % pc:
      raise ValueError(
        f"global_batch_size {gbs} is not divisible by process_count {pc}; "
        f"choose a batch size that is a multiple of the number of processes"
      )
    if not 0 <= pi < pc:
      raise ValueError(f"process_index {pi} is outside 0..{pc - 1}")
    local = gbs // pc
    return step, seed, pi * local, (pi + 1) * local

  def _check_split(self, split: str, available) -> None:
    if split not in available:
      raise ValueError(f"dataset {self.name!r} has no split {split!r}; available: {sorted(available)}")

  # ---- text helpers ---------------------------------------------------------------------------------
  def _require_alphabet(self) -> str:
    if self.alphabet is None:
      raise ValueError(
        f"dataset {self.name!r} is a {self.kind} dataset without an alphabet; text helpers need a text dataset"
      )
    return self.alphabet

  def encode_text(self, text: str) -> np.ndarray:
    """str -> int32 ids [len(text)]; a character outside the alphabet is an error naming it and its position."""
    alphabet = self._require_alphabet()
    if not isinstance(text, str):
      raise ValueError(f"encode_text needs a str, got {type(text).__name__}")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    hint = "normalise it first (lowercase; every run of other characters -> one space)"
    return symbols_to_ids(codes, alphabet, hint).astype(np.int32)

  def decode_text(self, ids, absorbing_char: str | None = None) -> str:
    """int ids [L] -> str. With `absorbing_char`, the absorbing value K renders as that character."""
    alphabet = self._require_alphabet()
    ids_L = np.asarray(ids)
    if ids_L.ndim != 1 or not np.issubdtype(ids_L.dtype, np.integer):
      raise ValueError(
        f"decode_text needs a 1-D integer array, got shape {ids_L.shape} dtype {ids_L.dtype}; decode a batch row by row"
      )
    table = alphabet + (absorbing_char if absorbing_char is not None else "")
    if ids_L.size and (ids_L.min() < 0 or ids_L.max() >= len(table)):
      raise ValueError(
        f"ids must lie in 0..{len(table) - 1}, got {ids_L.min()}..{ids_L.max()}"
        + ("" if absorbing_char is not None else "; pass absorbing_char= to show absorbed ids")
      )
    return "".join(np.array(list(table))[ids_L].tolist())

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, shape={self.shape}, "
      f"num_classes={self.num_classes}, num_train_items={self.num_train_items})"
    )


AUGMENTATIONS = ("none", "flip_rot90")
# Third seed word of the augmentation draws: keeps them a stream of their own, apart from the epoch permutations
# (`[seed, epoch]`) and the text crop starts (`[seed, step]`).
AUGMENT_STREAM = 0x4A06


def check_augment(augment: Any) -> str:
  if augment not in AUGMENTATIONS:
    raise ValueError(f"data.augment must be one of {', '.join(map(repr, AUGMENTATIONS))}, got {augment!r}")
  return augment


def flip_rot90(x_bxHxWxC: np.ndarray, flip_b: np.ndarray, quarter_turns_b: np.ndarray) -> np.ndarray:
  """Item i mirrored left-right if flip_b[i], then turned counter-clockwise by quarter_turns_b[i] * 90 degrees
  (the order and direction of tf.image.flip_left_right followed by tf.image.rot90)."""
  out = np.empty_like(x_bxHxWxC)
  for flip in (False, True):
    for k in range(4):
      sel = (flip_b.astype(bool) == flip) & (quarter_turns_b % 4 == k)
      if sel.any():
        x = x_bxHxWxC[sel]
        out[sel] = np.rot90(x[:, :, ::-1] if flip else x, k, axes=(1, 2))
  return out


def _storage_dtype(num_classes: int):
  return np.uint8 if num_classes <= 256 else (np.uint16 if num_classes <= 65536 else np.int32)


class ArrayDataset(Dataset):
  """Items already cut: `splits[name]` is an int array [N, *shape]; 'train' is required."""

  def __init__(
    self,
    name: str,
    kind: str,
    splits: Mapping[str, np.ndarray],
    num_classes: int,
    alphabet: str | None = None,
    augment: str = "none",
  ):
    check_augment(augment)
    if "train" not in splits:
      raise ValueError(f"dataset {name!r} needs a 'train' split, got {sorted(splits)}")
    shapes = {k: np.shape(v)[1:] for k, v in splits.items()}
    if len(set(shapes.values())) != 1:
      raise ValueError(f"dataset {name!r}: splits have different item shapes {shapes}")
    super().__init__(name, kind, shapes["train"], num_classes, alphabet)
    self._splits = {}
    for split, x in splits.items():
      x = np.asarray(x)
      if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(
          f"dataset {name!r}: split {split!r} has dtype {x.dtype}; items must be integers 0..num_classes-1"
        )
      if len(x) == 0:
        raise ValueError(f"dataset {name!r}: split {split!r} is empty")
      lo, hi = int(x.min()), int(x.max())
      if lo < 0 or hi >= num_classes:
        raise ValueError(
          f"dataset {name!r}: split {split!r} has values {lo}..{hi}, outside "
          f"0..{num_classes - 1}; set data.num_classes to at least {hi + 1} (values must be >= 0)"
        )
      self._splits[split] = x.astype(_storage_dtype(num_classes), copy=False)
    if augment != "none" and (len(self.shape) != 3 or self.shape[0] != self.shape[1]):
      raise ValueError(
        f"data.augment={augment!r} rotates by 90 degrees and needs square (H, W, C) items; "
        f"dataset {name!r} has items of shape {self.shape}; use data.augment='none'"
      )
    self.augment = augment
    self.num_train_items = len(self._splits["train"])
    self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

  def _epoch_perm(self, seed: int, epoch: int) -> np.ndarray:
    key = (seed, epoch)
    if key not in self._perm_cache:
      if len(self._perm_cache) >= 4:  # a batch spans at most a couple of epochs in practice
        self._perm_cache.pop(next(iter(self._perm_cache)))
      self._perm_cache[key] = np.random.default_rng([seed, epoch]).permutation(self.num_train_items)
    return self._perm_cache[key]

  def train_indices(self, step, global_batch_size, seed, process_index=0, process_count=1) -> np.ndarray:
    """Indices into the train split of this process's slice of the global batch at `step` (int64 [b])."""
    step, seed, lo, hi = self._local_range(step, global_batch_size, seed, process_index, process_count)
    n = self.num_train_items
    j_b = step * int(global_batch_size) + np.arange(lo, hi, dtype=np.int64)
    epoch_b, pos_b = np.divmod(j_b, n)
    idx_b = np.empty_like(j_b)
    for epoch in np.unique(epoch_b):
      sel = epoch_b == epoch
      idx_b[sel] = self._epoch_perm(seed, int(epoch))[pos_b[sel]]
    return idx_b

  def train_batch(self, step, global_batch_size, seed, process_index=0, process_count=1) -> np.ndarray:
    idx_b = self.train_indices(step, global_batch_size, seed, process_index, process_count)
    x_b = self._splits["train"][idx_b].astype(np.int32)
    if self.augment == "flip_rot90":
      # Drawn for the whole global batch (as the epoch permutation is), then sliced like the items.
      _, _, lo, hi = self._local_range(step, global_batch_size, seed, process_index, process_count)
      rng = np.random.default_rng([int(seed), int(step), AUGMENT_STREAM])
      flip_B = rng.integers(0, 2, size=int(global_batch_size))
      quarter_turns_B = rng.integers(0, 4, size=int(global_batch_size))
      x_b = flip_rot90(x_b, flip_B[lo:hi], quarter_turns_B[lo:hi])
    return x_b

  def eval_items(self, split: str) -> np.ndarray:
    self._check_split(split, self._splits)
    return self._splits[split].astype(np.int32)

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._splits)


class SequenceDataset(Dataset):
  """Long text: `sequences[name]` is a 1-D uint8 id stream per split; 'train' is required."""

  def __init__(self, name: str, sequences: Mapping[str, np.ndarray], seq_len: int, alphabet: str):
    seq_len = as_int(seq_len, "seq_len")
    if seq_len < 1:
      raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    super().__init__(name, "text", (seq_len,), len(alphabet), alphabet)
    if "train" not in sequences:
      raise ValueError(f"dataset {name!r} needs a 'train' split, got {sorted(sequences)}")
    self.sequences = {}
    for split, ids in sequences.items():
      ids = np.asarray(ids)
      if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"dataset {name!r}: split {split!r} must be a 1-D integer id stream")
      if len(ids) < seq_len:
        raise ValueError(
          f"dataset {name!r}: split {split!r} has {len(ids)} symbols, fewer than "
          f"seq_len={seq_len}; use a longer text or a smaller data.seq_len"
        )
      if ids.min() < 0 or ids.max() >= self.num_classes:
        raise ValueError(f"dataset {name!r}: split {split!r} has ids outside 0..{self.num_classes - 1}")
      self.sequences[split] = ids.astype(np.uint8, copy=False)
    # Counted as non-overlapping chunks, so an "epoch" of random crops covers about as many symbols.
    self.num_train_items = len(self.sequences["train"]) // seq_len

  def train_batch(self, step, global_batch_size, seed, process_index=0, process_count=1) -> np.ndarray:
    step, seed, lo, hi = self._local_range(step, global_batch_size, seed, process_index, process_count)
    train = self.sequences["train"]
    (seq_len,) = self.shape
    # The whole global batch is drawn on every process so the slices agree.
    starts_B = np.random.default_rng([seed, step]).integers(0, len(train) - seq_len + 1, size=int(global_batch_size))
    starts_b = starts_B[lo:hi]
    return train[starts_b[:, None] + np.arange(seq_len)].astype(np.int32)

  def eval_items(self, split: str) -> np.ndarray:
    self._check_split(split, self.sequences)
    ids = self.sequences[split]
    (seq_len,) = self.shape
    n = len(ids) // seq_len
    return ids[: n * seq_len].reshape(n, seq_len).astype(np.int32)

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.sequences)
