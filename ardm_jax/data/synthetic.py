"""Random items of a data set's shape and classes (`data.name='random'`), for `ardm preflight`.

The preflight check runs every job of a run (train, evaluate, policy, sample, complete, compress) without reading
or downloading the real data: a workdir trained on this source stores `data.name='random'` with the shape, so the
ordinary `ardm` commands open it like any other. Items are uniform over the classes; with `eval_items` held-out
items a split holds a partial last batch whenever eval_items is not a multiple of the batch size.

Keys: kind ('image' | 'text' | 'audio'), shape (tuple), num_classes, alphabet (text), sample_rate and bits (audio),
augment ['none'] (images, as `ardm_jax.data.images`), train_items [64], eval_items [64], seed [0].
"""

from __future__ import annotations

import numpy as np

from ardm_jax.data.audio import AudioDataset
from ardm_jax.data.base import ArrayDataset, as_int, cfg_get, check_augment

KINDS = ("image", "text", "audio")


def random_config(spec, *, train_items: int = 64, eval_items: int = 64, augment: str = "none") -> dict:
  """`config.data` of random items matching a `train_state.DataSpec` (the real data set's shape and classes) and
  its training augmentation."""
  cfg = dict(
    name="random",
    kind=spec.kind,
    shape=tuple(int(s) for s in spec.shape),
    num_classes=int(spec.num_classes),
    train_items=int(train_items),
    eval_items=int(eval_items),
    seed=0,
    augment=augment,
  )
  if spec.alphabet is not None:
    cfg["alphabet"] = spec.alphabet
  if spec.kind == "audio":
    cfg |= dict(sample_rate=int(spec.sample_rate), bits=int(spec.bits))
  return cfg


def load_random(data_cfg) -> ArrayDataset:
  kind = cfg_get(data_cfg, "kind")
  if kind not in KINDS:
    raise ValueError(f"data.kind must be one of {KINDS} for data.name='random', got {kind!r}")
  shape = tuple(as_int(s, "data.shape entries") for s in cfg_get(data_cfg, "shape", ()))
  if not shape or min(shape) < 1:
    raise ValueError(f"data.shape must be a non-empty tuple of positive sizes, got {shape}")
  k = as_int(cfg_get(data_cfg, "num_classes"), "data.num_classes")
  rng = np.random.default_rng(as_int(cfg_get(data_cfg, "seed", 0), "data.seed"))
  splits = {}
  for split, count_key in (("train", "train_items"), ("validation", "eval_items"), ("test", "eval_items")):
    count = as_int(cfg_get(data_cfg, count_key, 64), f"data.{count_key}")
    splits[split] = rng.integers(0, k, size=(count,) + shape, dtype=np.int32)
  if kind == "audio":
    bits = as_int(cfg_get(data_cfg, "bits"), "data.bits")
    if k != 1 << bits:
      raise ValueError(f"random audio needs num_classes = 2**bits, got {k} and bits={bits}")
    return AudioDataset("random", splits, as_int(cfg_get(data_cfg, "sample_rate"), "data.sample_rate"), bits)
  return ArrayDataset(
    "random",
    kind,
    splits,
    k,
    alphabet=cfg_get(data_cfg, "alphabet"),
    augment=check_augment(cfg_get(data_cfg, "augment", "none")),
  )
