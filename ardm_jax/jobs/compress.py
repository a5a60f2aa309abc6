"""`ardm compress`: files (images, text, audio) into one container with a trained model (ardm_jax/compress.py)."""

from __future__ import annotations

import os

from ardm_jax import file_io
from ardm_jax.coding import container
from ardm_jax.coding_model import coding_devices, coding_model_for
from ardm_jax.compress import compress_files
from ardm_jax.file_items import read_inputs
from ardm_jax.jobs import model_source, options
from ardm_jax.model_dir import trained_spec


def add_parser(sub) -> None:
  p = sub.add_parser(
    "compress", description="lossless compression of images (.png/.npy), text or audio (.wav) with a trained model"
  )
  options.add_model_source(p, data=True)  # the data: for --search-orders' training items
  options.add_step(p)
  p.add_argument(
    "inputs", nargs="+", metavar="INPUT", help=".png/.npy images, .txt text or 16-bit mono .wav audio (any size: tiled)"
  )
  options.add_out(p, "output container file", required=True, short=True)
  p.add_argument(
    "--mode",
    choices=container.MODES,
    default="item",
    help="item: one ANS stream per item (the paper's per-image setting); dataset: one stream for all",
  )
  options.add_policy_args(
    p,
    budget_help="network calls per batch of items, over all stages of an upscale model (default: one per "
    "variable and stage, the best rate)",
    policy_help="policy file (default WORKDIR/policy.json); decode with the same",
    split_help="how an upscale model's --budget is divided over its stages for the DP policy: optimal "
    "(lowest expected bits) or equal (the paper's Table 7); decompression finds it by itself",
  )
  p.add_argument(
    "--search-orders",
    type=int,
    default=0,
    metavar="N",
    help="try the orders of N seeds on training items and keep the best (the paper uses 5)",
  )
  p.add_argument("--search-items", type=options.positive_int, default=64, help="training items for --search-orders")
  p.add_argument("--seed", type=int, default=0, help="order seed (first seed tried with --search-orders)")
  p.add_argument("--keep-names", action="store_true", help="store the input file names (costs their length)")
  options.add_overwrite(p, "replace an existing output file")


def run(args) -> None:
  model_source.enable_compile_cache(args.workdir)
  file_io.check_writable(args.out, args.overwrite)
  if args.search_orders < 0 or args.seed < 0:
    raise ValueError(f"--search-orders and --seed must be >= 0, got {args.search_orders} and {args.seed}")
  options.resolve_model(args)
  # Bad inputs fail fast, before the model is loaded.
  entries = read_inputs(trained_spec(args.workdir, args.model), args.inputs, args.keep_names)
  cm = coding_model_for(model_source.open_model(args, devices=coding_devices()))
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
