"""Text sources on the text8 alphabet: text8 itself and any local text file.

text8 (Mahoney 2006) is the first 10^8 characters of an English Wikipedia dump reduced to 27 symbols:
' ' -> 0, 'a'..'z' -> 1..26. The paper's split is by absolute counts: first 90M characters train, next 5M
validation, last 5M test. `split_contiguous` splits every text 90/5/5 by proportion, which gives exactly those
counts on the real 100,000,000-character file and a proportional split on any other text.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from ardm_jax.alphabets import TEXT8_ALPHABET
from ardm_jax.data.base import SequenceDataset, cfg_get, positive_int, require_path, symbols_to_ids

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_SEQ_LEN = 250  # the paper's text8 crop length
TEXT_SEQ_LEN = 256

_NON_ALPHA = re.compile(r"[^a-z]+")


def normalise_text(text: str) -> str:
  """Lowercase; every run of characters outside a-z (digits, punctuation, newlines, accented letters) becomes one
  space; strip. Unlike Mahoney's text8 script, digits are not spelt out."""
  return _NON_ALPHA.sub(" ", text.lower()).strip()


def text_to_ids(text: str, hint: str) -> np.ndarray:
  """str on the text8 alphabet -> uint8 ids; the first other character is an error naming it and its position."""
  codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
  return symbols_to_ids(codes, TEXT8_ALPHABET, hint)


def split_contiguous(ids: np.ndarray) -> dict[str, np.ndarray]:
  """First 90% train, next 5% validation, the rest (5%, plus rounding) test; floors, so 10^8 -> 90M/5M/5M."""
  n = len(ids)
  n_train, n_val = n * 90 // 100, n * 5 // 100
  return {"train": ids[:n_train], "validation": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}


def _read_text8_bytes(path: str) -> bytes:
  if os.path.isdir(path):
    for name in ("text8.zip", "text8"):
      if os.path.isfile(os.path.join(path, name)):
        return _read_text8_bytes(os.path.join(path, name))
    raise ValueError(f"folder {path!r} holds neither text8.zip nor text8; download {TEXT8_URL} into it")
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      names = [n for n in zf.namelist() if not n.endswith("/")]
      member = "text8" if "text8" in names else (names[0] if len(names) == 1 else None)
      if member is None:
        raise ValueError(f"zip {path!r} has no member 'text8' (members: {names[:5]}); use the official {TEXT8_URL}")
      return zf.read(member)
  with open(path, "rb") as f:
    return f.read()


def load_text8(data_cfg) -> SequenceDataset:
  """`data.path`: text8.zip, the unzipped text8 file, or a folder holding either. `data.seq_len` (default 250)."""
  fix = f"download {TEXT8_URL} and set --config.data.path=/path/to/text8.zip (the zip or the unzipped text8 file)"
  path = require_path(data_cfg, "text8", fix)
  seq_len = positive_int(data_cfg, "seq_len", TEXT8_SEQ_LEN)
  codes = np.frombuffer(_read_text8_bytes(path), dtype=np.uint8)
  ids = symbols_to_ids(
    codes,
    TEXT8_ALPHABET,
    unit="byte",
    hint=f"{path!r} is not text8 (only ' ' and a-z); for other text use data.name='text_file'",
  )
  return SequenceDataset("text8", split_contiguous(ids), seq_len, TEXT8_ALPHABET)


def load_text_file(data_cfg) -> SequenceDataset:
  """`data.path`: a UTF-8 / ASCII text file. `data.normalise` (default True) maps it onto the text8 alphabet;
  False refuses any character outside it. `data.seq_len` (default 256). Split 90/5/5 contiguously."""
  path = require_path(data_cfg, "text file", "set --config.data.path=/path/to/file.txt")
  if os.path.isdir(path):
    raise ValueError(f"data.path {path!r} is a folder; text_file needs one text file")
  seq_len = positive_int(data_cfg, "seq_len", TEXT_SEQ_LEN)
  normalise = cfg_get(data_cfg, "normalise", True)
  if not isinstance(normalise, bool):
    raise ValueError(f"data.normalise must be True or False, got {normalise!r}")
  try:
    with open(path, encoding="utf-8-sig") as f:  # -sig: a leading byte-order mark is not text
      text = f.read()
  except UnicodeDecodeError as e:
    raise ValueError(f"{path!r} is not UTF-8 text (bad byte at offset {e.start}); re-encode it as UTF-8") from None
  if normalise:
    text = normalise_text(text)
  ids = text_to_ids(text, hint=f"in {path!r}; set --config.data.normalise=True to map the text onto the text8 alphabet")
  return SequenceDataset("text_file", split_contiguous(ids), seq_len, TEXT8_ALPHABET)
