"""Lossless compression of files with a trained ARDM: what `ardm compress` / `ardm decompress` (jobs/compress.py,
jobs/decompress.py) run.

This module joins: files in (`file_items.py`: inputs, tiling, the file table), the model's network call,
policy, order search and rates (`coding_model.py`), the entropy coder and container (`coding/`), files out. The README's section "Container format" describes the bytes.

Models: every model a config trains (`model.setup.objective`, see ardm_jax/objective.py): plain OA-ARDMs with a
categorical or a discretised logistic mixture output (16-bit audio, K = 65,536), and upscale ARDMs (S stages,
coarse to fine, 'data' or 'direct' parametrisation), coded stage by stage over a global policy.
"""

from __future__ import annotations

import os

import numpy as np

from ardm_jax.coding import container
from ardm_jax.coding_items import CodingStats, compress_items, decompress_items
from ardm_jax.coding_model import CodingModel
from ardm_jax.coding_policy import encoder_policy, search_order
from ardm_jax.file_items import (
  FileEntry,
  decode_file_table,
  encode_file_table,
  from_items,
  output_names,
  read_inputs,
  to_items,
  write_entry,
)


def compress_files(
  cm: CodingModel,
  paths_or_entries: list,
  *,
  mode: str = "item",
  budget: int | None = None,
  naive: bool = False,
  policy_file: str | None = None,
  search_orders: int = 0,
  search_items: int = 64,
  seed: int = 0,
  keep_names: bool = False,
  split: str = "optimal",
) -> tuple[bytes, dict]:
  """Reads the inputs (paths, or entries from `read_inputs`), picks policy and order, and codes them into one
  container. Returns (bytes, report)."""
  if mode not in container.MODES:
    raise ValueError(f"--mode must be one of {container.MODES}, got {mode!r}")
  spec = cm.spec
  entries = paths_or_entries
  if not entries or not isinstance(entries[0], FileEntry):
    entries = read_inputs(spec, paths_or_entries, keep_names)
  items = np.concatenate([to_items(e, spec) for e in entries])
  steps, policy_label = encoder_policy(cm, budget, naive, policy_file, split)
  report = {"policy": policy_label, "files": len(entries)}
  order_seed = seed
  if search_orders:
    order_seed, scores = search_order(cm, steps, search_orders, search_items, base_seed=seed)
    report["order_search"] = {
      "seeds": list(range(seed, seed + search_orders)),
      "train_bpd": scores,
      "items": search_items,
    }
  data, stats = compress_items(
    cm, items, mode=mode, steps=steps, order_seed=order_seed, file_table=encode_file_table(entries, spec.shape)
  )
  report |= {"order_seed": order_seed, "stats": stats}
  return data, report


def decompress_file(
  cm: CodingModel, data: bytes, outdir: str, *, policy_file: str | None = None, overwrite: bool = False
) -> tuple[list[str], CodingStats]:
  """Decodes a container and writes its files into `outdir`; refuses to replace files unless `overwrite`."""
  c, items, stats = decompress_items(cm, data, policy_file=policy_file)
  entries = decode_file_table(c.file_table, cm.spec, c.num_items)
  paths = [os.path.join(outdir, n) for n in output_names(entries)]
  if not overwrite:
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
      raise FileExistsError(
        f"{existing[0]} exists ({len(existing)} output file(s) would be replaced); choose "
        "another output folder or pass --overwrite"
      )
  os.makedirs(outdir, exist_ok=True)
  lo = 0
  for entry, path in zip(entries, paths):
    n = entry.num_items(cm.spec.shape)
    write_entry(cm.spec, entry, from_items(entry, items[lo : lo + n], cm.spec.shape), path, overwrite)
    lo += n
  return paths, stats
