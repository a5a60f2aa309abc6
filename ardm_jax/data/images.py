"""Image sources: a local .npz, a folder of PNGs, and tfds CIFAR-10 / MNIST. Items are uint8 (H, W, C).

Every source here takes `data.augment` ['none'] | 'flip_rot90' (random flips and quarter turns of training items,
as the official CIFAR-10 pipeline's data_augmentation=True; square images only; see ardm_jax.data.base).

Sources without their own test split are split with `fixed_split(N, max(1, N // 10), seed=0)`: the last
tenth of a seed-0 permutation is the test set, so the split is the same on every machine and every run.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ardm_jax.data import tfds_util
from ardm_jax.data.base import ArrayDataset, as_int, cfg_get, check_augment, fixed_split, require_path

IMAGE_CLASSES = 256
HOLDOUT_SEED = 0
TFDS_SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1)}

# Accepted npz key spellings per split; train and test must both be present when any of these is used.
_NPZ_KEYS = {
  "train": ("train_x", "x_train"),
  "validation": ("validation_x", "x_validation", "val_x", "x_val"),
  "test": ("test_x", "x_test"),
}
_NPZ_SINGLE_KEYS = ("x", "images")


def _holdout(x_NxHxWxC: np.ndarray) -> dict[str, np.ndarray]:
  train_idx, test_idx = fixed_split(len(x_NxHxWxC), max(1, len(x_NxHxWxC) // 10), HOLDOUT_SEED)
  return {"train": x_NxHxWxC[train_idx], "test": x_NxHxWxC[test_idx]}


def _num_classes(data_cfg) -> int:
  k = as_int(cfg_get(data_cfg, "num_classes", IMAGE_CLASSES), "data.num_classes")
  if k < 2:
    raise ValueError(f"data.num_classes must be >= 2, got {k}")
  return k


def _augment(data_cfg) -> str:
  """`data.augment` ['none']: 'flip_rot90' flips and rotates training items (see ardm_jax.data.base). Checked
  before any data is read, so a misspelt value fails at once."""
  return check_augment(cfg_get(data_cfg, "augment", "none"))


def _with_channels(x, where: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 3:  # (N, H, W) grayscale
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{where}: images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
  return x


def load_npz(data_cfg) -> ArrayDataset:
  """`data.path` (.npz), `data.num_classes` (default 256). Keys: train_x/test_x (or x_train/x_test, optional
  validation_x), or one `x` / `images` array split 90/10 by the fixed holdout."""
  augment = _augment(data_cfg)
  path = require_path(data_cfg, "npz file", "set --config.data.path=/path/to/images.npz")
  num_classes = _num_classes(data_cfg)
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path!r} is not a readable .npz ({e})") from None
  with npz:
    keys = set(npz.files)
    found = {split: next((k for k in names if k in keys), None) for split, names in _NPZ_KEYS.items()}
    if found["train"] or found["test"]:
      if not (found["train"] and found["test"]):
        raise ValueError(
          f"{path!r} has {found['train'] or found['test']!r} but not its partner; it needs "
          f"both train_x and test_x (or x_train and x_test)"
        )
      splits = {s: _with_channels(npz[k], f"{path!r}[{k!r}]") for s, k in found.items() if k}
    else:
      single = next((k for k in _NPZ_SINGLE_KEYS if k in keys), None)
      if single is None:
        raise ValueError(
          f"{path!r} has keys {sorted(keys)}; expected train_x/test_x, x_train/x_test, "
          f"or a single 'x' or 'images' array"
        )
      splits = _holdout(_with_channels(npz[single], f"{path!r}[{single!r}]"))
  return ArrayDataset("npz", "image", splits, num_classes, augment=augment)


def _read_png(path: str) -> np.ndarray:
  with Image.open(path) as im:
    if im.format != "PNG":
      raise ValueError(f"{path!r} is not a PNG (format {im.format})")
    mode = im.mode
    if mode == "1":
      im = im.convert("L")
    elif mode == "P":
      if "transparency" in im.info:
        raise ValueError(f"{path!r} has an alpha channel; save it as grayscale or RGB")
      im = im.convert("RGB")
    elif mode in ("LA", "RGBA", "PA"):
      raise ValueError(f"{path!r} has an alpha channel ({mode}); save it as grayscale or RGB")
    elif mode not in ("L", "RGB"):
      raise ValueError(f"{path!r} has mode {mode}; only 8-bit grayscale or RGB PNGs are supported")
    x = np.asarray(im, dtype=np.uint8)
  return x[..., None] if x.ndim == 2 else x


def load_png_folder(data_cfg) -> ArrayDataset:
  """`data.path` (folder of equal-size PNGs, read in name order), `data.num_classes` (default 256).
  Split 90/10 by the fixed holdout."""
  augment = _augment(data_cfg)
  path = require_path(data_cfg, "PNG folder", "set --config.data.path=/path/to/folder_of_pngs")
  if not os.path.isdir(path):
    raise ValueError(f"data.path {path!r} is not a folder; png_folder needs a folder of .png files")
  num_classes = _num_classes(data_cfg)
  names = sorted(n for n in os.listdir(path) if n.lower().endswith(".png"))
  if len(names) < 2:
    raise ValueError(f"{path!r} holds {len(names)} .png files; need at least 2 (train and test)")
  images, first = [], None
  for name in names:
    x_HxWxC = _read_png(os.path.join(path, name))
    if first is None:
      first = (name, x_HxWxC.shape)
    elif x_HxWxC.shape != first[1]:
      raise ValueError(
        f"{os.path.join(path, name)!r} is {x_HxWxC.shape} (H, W, C) but {first[0]!r} is "
        f"{first[1]}; all PNGs must share size and channels"
      )
    images.append(x_HxWxC)
  return ArrayDataset("png_folder", "image", _holdout(np.stack(images)), num_classes, augment=augment)


def load_tfds_images(data_cfg, name: str) -> ArrayDataset:
  """tfds `cifar10` / `mnist`, uint8, 256 classes. `data.tfds_data_dir` (default: tfds's own default),
  `data.download` (default False: an unprepared dataset is an immediate error instead of a download)."""
  augment = _augment(data_cfg)
  data_dir = cfg_get(data_cfg, "tfds_data_dir")
  download = cfg_get(data_cfg, "download", False)
  if not isinstance(download, bool):
    raise ValueError(f"data.download must be True or False, got {download!r}")
  tfds_util.require_prepared(name, data_dir, download)
  splits = {}
  for split in ("train", "test"):
    x = _with_channels(tfds_util.load_split_numpy(name, split, data_dir), f"tfds {name}:{split}")
    if x.shape[1:] != TFDS_SHAPES[name] or x.dtype != np.uint8:
      raise ValueError(
        f"tfds {name}:{split} gave images {x.shape} {x.dtype}; expected (N, "
        f"{', '.join(map(str, TFDS_SHAPES[name]))}) uint8"
      )
    splits[split] = x
  return ArrayDataset(name, "image", splits, IMAGE_CLASSES, augment=augment)
