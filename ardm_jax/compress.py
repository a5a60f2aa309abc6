"""Lossless compression with a trained ARDM: the `ardm compress` / `ardm decompress` jobs.

This module runs the jobs: files in (`file_items.py`: inputs, tiling, the file table), the model's network call,
policy, order search and rates (`coding_model.py`), the entropy coder and container (`coding.py`,
`entropy_models.py`), files out. The README's section "Container format" describes the bytes.

Models: every model a config trains (`model.setup.objective`, see ardm_jax/objective.py): plain OA-ARDMs with a
categorical or a discretised logistic mixture output (16-bit audio, K = 65,536), and upscale ARDMs (S stages,
coarse to fine, 'data' or 'direct' parametrisation), coded stage by stage over a global policy.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from ardm_jax.coding import checks, container, packing
from ardm_jax.coding_items import MAX_DECODE_SYMBOLS, CodingStats, compress_items, decompress_items
from ardm_jax.coding_model import CodingModel, Predictor, coding_devices, coding_model_for  # noqa: F401
from ardm_jax.coding_policy import encoder_policy, search_order
from ardm_jax.file_items import (
  FileEntry,
  _from_items,
  _to_items,
  _write_entry,  # noqa: F401
  decode_file_table,
  encode_file_table,
  output_names,
  read_inputs,
)
from ardm_jax.model_dir import add_model_source, open_trained, trained_spec
from ardm_jax.policy import BUDGET_SPLIT_KEYS  # NumPy only: cheap for --help

# jax, the workdir and the data sources are imported inside the jobs: the CLI builds its parser from this module
# and should not pay for a JAX import to print --help.


# --------------------------------------------------------------------------------------------------------------
# Whole jobs


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
  items = np.concatenate([_to_items(e, spec) for e in entries])
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
    _write_entry(cm.spec, entry, _from_items(entry, items[lo : lo + n], cm.spec.shape), path, overwrite)
    lo += n
  return paths, stats


# --------------------------------------------------------------------------------------------------------------
# CLI


def _positive(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def add_parsers(sub) -> None:
  p = sub.add_parser(
    "compress", help="lossless compression of images (.png/.npy), text or audio (.wav) with a trained model"
  )
  add_model_source(p, data=True)  # the data: for --search-orders' training items
  p.add_argument(
    "inputs", nargs="+", metavar="INPUT", help=".png/.npy images, .txt text or 16-bit mono .wav audio (any size: tiled)"
  )
  p.add_argument("-o", "--out", required=True, help="output container file")
  p.add_argument(
    "--mode",
    choices=container.MODES,
    default="item",
    help="item: one ANS stream per item (the paper's per-image setting); dataset: one stream for all",
  )
  p.add_argument(
    "--budget",
    type=_positive,
    default=None,
    help="network calls per batch of items, over all stages of an upscale model (default: one per "
    "variable and stage, the best rate)",
  )
  p.add_argument("--naive", action="store_true", help="evenly spaced policy steps instead of the DP policy")
  p.add_argument(
    "--budget-split",
    choices=tuple(BUDGET_SPLIT_KEYS),
    default="optimal",
    help="how an upscale model's --budget is divided over its stages for the DP policy: optimal "
    "(lowest expected bits) or equal (the paper's Table 7); decompression finds it by itself",
  )
  p.add_argument("--policy", default=None, help="policy file (default WORKDIR/policy.json); decode with the same")
  p.add_argument(
    "--search-orders",
    type=int,
    default=0,
    metavar="N",
    help="try the orders of N seeds on training items and keep the best (the paper uses 5)",
  )
  p.add_argument("--search-items", type=_positive, default=64, help="training items for --search-orders")
  p.add_argument("--seed", type=int, default=0, help="order seed (first seed tried with --search-orders)")
  p.add_argument("--keep-names", action="store_true", help="store the input file names (costs their length)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--overwrite", action="store_true")

  p = sub.add_parser("decompress", help="restore the files of an `ardm compress` container")
  add_model_source(p)  # the model that compressed the file: its workdir or its exported folder
  p.add_argument("input", metavar="IN")
  p.add_argument("-o", "--out", required=True, help="output folder (created if missing)")
  p.add_argument("--policy", default=None, help="policy file used for compression (default WORKDIR/policy.json)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--overwrite", action="store_true")


def _check_out_file(path: str, overwrite: bool) -> None:
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; choose another --out or pass --overwrite to replace it")


def cmd_compress(args) -> None:
  _check_out_file(args.out, args.overwrite)
  if args.search_orders < 0 or args.seed < 0:
    raise ValueError(f"--search-orders and --seed must be >= 0, got {args.search_orders} and {args.seed}")
  # Bad inputs fail fast, before the model is loaded.
  entries = read_inputs(trained_spec(args.workdir, args.model), args.inputs, args.keep_names)
  cm = coding_model_for(
    open_trained(args.workdir, args.model, step=args.step, data_path=args.data_path, devices=coding_devices())
  )
  data, report = compress_files(
    cm,
    entries,
    mode=args.mode,
    budget=args.budget,
    naive=args.naive,
    policy_file=args.policy,
    search_orders=args.search_orders,
    search_items=args.search_items,
    seed=args.seed,
    keep_names=args.keep_names,
    split=args.budget_split,
  )
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "wb" if args.overwrite else "xb") as f:
    f.write(data)
  s = report["stats"]
  unit = {"text": "bits/char", "audio": "bits/sample"}.get(cm.spec.kind, "bits/dim")
  if "order_search" in report:
    tried = ", ".join(
      f"{seed}: {bpd:.4f}" for seed, bpd in zip(report["order_search"]["seeds"], report["order_search"]["train_bpd"])
    )
    print(
      f"order search on {report['order_search']['items']} training items ({unit}): {tried}; "
      f"kept seed {report['order_seed']}"
    )
  print(
    f"{report['files']} file(s) -> {s.num_items} item(s) of shape {s.item_shape}, mode {s.mode}, "
    f"{s.policy_steps} policy steps ({report['policy']}), order seed {report['order_seed']}, "
    f"{s.network_calls} network calls, {s.seconds:.2f}s"
  )
  print(
    f"{args.out}: {s.total_bytes} bytes = {s.bpd(8 * s.total_bytes):.4f} {unit} "
    f"(header {s.header_bytes} B, records {s.record_bytes} B, payload {s.payload_bytes} B)"
  )
  print(
    f"payload {s.bpd(8 * s.payload_bytes):.4f} {unit}; model NLL for this order and policy "
    f"{s.bpd(s.model_nll_bits):.4f} {unit} (quantised tables {s.bpd(s.table_nll_bits):.4f})"
  )


def cmd_decompress(args) -> None:
  if not os.path.isfile(args.input):
    raise ValueError(f"input file {args.input} does not exist")
  with open(args.input, "rb") as f:
    data = f.read()
  spec = trained_spec(args.workdir, args.model)
  # A damaged file or a non-container fails here, before the model is loaded (parsing only: any stage count).
  packing.unpack_container(
    data,
    expected_fingerprint=None,
    expected_shape=spec.shape,
    max_symbols=MAX_DECODE_SYMBOLS,
    num_stages=checks.MAX_STAGES,
  )
  cm = coding_model_for(open_trained(args.workdir, args.model, step=args.step, devices=coding_devices()))
  paths, s = decompress_file(cm, data, args.out, policy_file=args.policy, overwrite=args.overwrite)
  print(
    f"{args.input}: {s.num_items} item(s), mode {s.mode}, {s.policy_steps} policy steps, "
    f"{s.network_calls} network calls, {s.seconds:.2f}s -> {len(paths)} file(s) in {args.out}"
  )
