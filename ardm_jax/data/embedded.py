"""Data that ships with the dependencies, so smoke runs and tests need no download.

* digits: scikit-learn's `load_digits`, 1,797 images of 8x8 with values 0..16 (17 classes), shape (8, 8, 1).
  Fixed split: the last 300 entries of `np.random.default_rng(0).permutation(1797)` are the test set (300 items),
  the other 1,497 train, each kept in the original order. The split never changes; tests pin it with a hash.
* pydoc_text: the English prose of Python's `pydoc_data.topics` (the `topics` values joined in sorted key order),
  reduced to text8's 27 symbols: 375,756 characters on CPython 3.11.7 (the prose differs slightly between
  Python versions, so numbers are comparable only on the same version). Split 90/5/5 contiguously:
  338,180 / 18,787 / 18,789 characters.
"""

from __future__ import annotations

from pydoc_data import topics

import numpy as np

from ardm_jax.data.base import ArrayDataset, SequenceDataset, fixed_split, positive_int
from ardm_jax.data.text import TEXT8_ALPHABET, TEXT_SEQ_LEN, normalise_text, split_contiguous, text_to_ids

DIGITS_CLASSES = 17
DIGITS_TEST_ITEMS = 300
DIGITS_SPLIT_SEED = 0  # a property of the split, not of the run: changing it breaks comparability


def load_digits(data_cfg=None) -> ArrayDataset:
  """scikit-learn digits as uint8 (N, 8, 8, 1); takes no config keys."""
  # Imported here: scikit-learn costs 1-2 s to import (measured), and only the digits source needs it.
  from sklearn.datasets import load_digits as sk_load_digits  # noqa: PLC0415

  x_Nx8x8 = sk_load_digits().images
  x_Nx8x8x1 = np.rint(x_Nx8x8).astype(np.uint8)[..., None]
  train_idx, test_idx = fixed_split(len(x_Nx8x8x1), DIGITS_TEST_ITEMS, DIGITS_SPLIT_SEED)
  return ArrayDataset(
    "digits", "image", {"train": x_Nx8x8x1[train_idx], "test": x_Nx8x8x1[test_idx]}, num_classes=DIGITS_CLASSES
  )


def pydoc_prose() -> str:
  """The raw prose: `pydoc_data.topics.topics` values joined by newlines in sorted key order."""
  return "\n".join(topics.topics[k] for k in sorted(topics.topics))


def load_pydoc_text(data_cfg=None) -> SequenceDataset:
  """`data.seq_len` (default 256)."""
  seq_len = positive_int(data_cfg if data_cfg is not None else {}, "seq_len", TEXT_SEQ_LEN)
  ids = text_to_ids(normalise_text(pydoc_prose()), hint="normalisation left a stray character")
  return SequenceDataset("pydoc_text", split_contiguous(ids), seq_len, TEXT8_ALPHABET)
