"""Lossless compression benchmark: per-image ARDM against PNG, WebP and JPEG-XL, and whole-set xz / bz2.

Every ARDM image is compressed into its own file (one container per image, header included) and decoded again
from that file alone; round trips are checked exactly. Baselines code the same images as 8-bit PNGs of their
class values 0..K-1 (smaller files than values spread over 0..255 for K < 256; the setting of the reference
numbers in the design guide): PNG (Pillow, optimize), WebP lossless
(`cwebp -lossless -exact -z 9`), JPEG-XL lossless (`cjxl -d 0 -e 9`; Debian: apt-get install libjxl-tools webp),
and the whole test set as raw class-value bytes through xz (-9e) and bz2 (-9). Prints one markdown table.

  python benchmarks/compression_codecs.py --digits-workdir runs/digits --cifar-workdir runs/cifar10_subset \
      --cifar-budget 20

Missing tools are reported as such in the table instead of failing the run.
"""

from __future__ import annotations

import argparse
import bz2
import io
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ardm_jax import coding_items, coding_model, coding_policy, data  # noqa: E402  (the repository root must be importable first)
from ardm_jax.coding import packing  # noqa: E402  (the repository root must be importable first)


def png_bytes(pixels: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, format="PNG", optimize=True)
  return buf.getvalue()


def tool_sizes(tool: str, args_fn, pngs: list[bytes], ext: str) -> list[int] | None:
  if shutil.which(tool) is None:
    return None
  sizes = []
  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, "in.png"), os.path.join(tmp, "out" + ext)
    for png in pngs:
      with open(src, "wb") as f:
        f.write(png)
      subprocess.run([tool, *args_fn(src, dst)], check=True, capture_output=True)
      sizes.append(os.path.getsize(dst))
  return sizes


def baselines(items: np.ndarray, num_classes: int) -> list[tuple[str, float, str]]:
  """(method, bits/dim, note) for the image codecs (per image) and the whole-set compressors."""
  dims = items[0].size
  if num_classes > 256:
    raise ValueError(f"8-bit image baselines need K <= 256, got {num_classes}")
  pngs = [png_bytes(x.astype(np.uint8)) for x in items]
  rows = [("PNG (Pillow, optimize)", 8 * np.mean([len(p) for p in pngs]) / dims, "per image")]
  webp = tool_sizes("cwebp", lambda s, d: ["-quiet", "-lossless", "-exact", "-z", "9", s, "-o", d], pngs, ".webp")
  jxl = tool_sizes("cjxl", lambda s, d: [s, d, "-d", "0", "-e", "9", "--quiet"], pngs, ".jxl")
  for name, sizes in (("WebP lossless (cwebp -z 9)", webp), ("JPEG-XL lossless (cjxl -d 0 -e 9)", jxl)):
    rows.append(
      (
        name,
        float("nan") if sizes is None else 8 * np.mean(sizes) / dims,
        "per image" if sizes is not None else "tool missing",
      )
    )
  raw = np.ascontiguousarray(items, np.uint8).tobytes()
  rows.append(
    (
      "xz -9e (whole set)",
      8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / raw.__len__(),
      "class values as bytes",
    )
  )
  rows.append(("bz2 -9 (whole set)", 8 * len(bz2.compress(raw, 9)) / len(raw), "class values as bytes"))
  return rows


def _per_image_files(cm, items, steps, seed):
  """Each image coded alone into its own container and decoded alone: (file sizes, encode s, decode s, payload
  bytes, model NLL bits, network calls)."""
  N = len(items)
  coding_items.compress_items(cm, items[:1], mode="item", steps=steps, order_seed=seed)  # compile outside the timing
  files, enc_s, dec_s, payload, nll, calls = [], 0.0, 0.0, 0, 0.0, 0
  for i in range(N):
    blob, s = coding_items.compress_items(cm, items[i : i + 1], mode="item", steps=steps, order_seed=seed)
    _, out, ds = coding_items.decompress_items(cm, blob)
    if not np.array_equal(out, items[i : i + 1]):
      raise AssertionError(f"round trip of image {i} is not exact")
    files.append(len(blob))
    enc_s, dec_s = enc_s + s.seconds, dec_s + ds.seconds
    payload, nll, calls = payload + s.payload_bytes, nll + s.model_nll_bits, calls + s.network_calls
    if (i + 1) % 50 == 0:
      print(
        f"  {i + 1}/{N} images: {np.mean(files):.1f} B/file, {enc_s / (i + 1):.2f}s encode and "
        f"{dec_s / (i + 1):.2f}s decode per image",
        file=sys.stderr,
        flush=True,
      )
  return files, enc_s, dec_s, payload, nll, calls


def _per_image_streams_batched(cm, items, steps, seed):
  """All images in one per-item container (one independent ANS stream per image, network calls batched over the
  images), decoded together. An image's file size is what it costs alone: its stream packed into a one-image
  container of its own (the bytes `ardm compress` writes for it). Returns the same tuple as _per_image_files."""
  N = len(items)
  blob, s = coding_items.compress_items(cm, items, mode="item", steps=steps, order_seed=seed)
  c, out, ds = coding_items.decompress_items(cm, blob)
  if not np.array_equal(out, items):
    raise AssertionError("round trip of the per-image streams is not exact")
  files = [
    len(
      packing.pack_container(
        [payload],
        items[i].reshape(1, -1),
        mode="item",
        fingerprint=cm.fingerprint,
        kind=cm.spec.kind,
        item_shape=cm.spec.shape,
        policy=steps,
        order_seed=seed,
        num_classes=cm.spec.num_classes,
        num_stages=cm.num_stages,
        symbols=c.symbols,
        compact=True,
        implied_shape=cm.spec.shape,
      )
    )
    for i, payload in enumerate(c.payloads)
  ]
  # Per image, the network calls are the policy's: the batch shares each call (Predictor counts sub-batches).
  return files, s.seconds, ds.seconds, s.payload_bytes, s.model_nll_bits, len(steps) * N


def ardm_rows(
  cm,
  items: np.ndarray,
  budget: int | None,
  naive: bool,
  search_orders: int,
  search_items: int,
  stream: bool,
  batched: bool = False,
):
  """Per-image files and optionally one per-data-set stream; rows and a summary. `batched` codes the per-image
  streams in one batched pass (see _per_image_streams_batched) instead of one file at a time."""
  steps, label = coding_policy.encoder_policy(cm, budget, naive)
  seed, scores = 0, []
  if search_orders:
    seed, scores = coding_policy.search_order(cm, steps, search_orders, search_items)
  N, dims = len(items), items[0].size
  files, enc_s, dec_s, payload, nll, calls = (_per_image_streams_batched if batched else _per_image_files)(
    cm, items, steps, seed
  )
  how = "streams coded in one batch, sized as single files" if batched else "each file coded and decoded alone"
  rows = [
    (
      f"ARDM per image, file on disk ({label}, {len(steps)} steps)",
      8 * np.mean(files) / dims,
      f"{np.mean(files):.1f} B/file; {how}; exact round trips {N}/{N}",
      1e3 * enc_s / N,
      1e3 * dec_s / N,
      calls / N,
    ),
    ("  ARDM per image, payload only", 8 * payload / (N * dims), "ANS streams alone", None, None, None),
    ("  model NLL, same order and policy", nll / (N * dims), "sum -log2 p of the network", None, None, None),
  ]
  if stream:
    blob, s = coding_items.compress_items(cm, items, mode="dataset", steps=steps, order_seed=seed)
    _, out, ds = coding_items.decompress_items(cm, blob)
    if not np.array_equal(out, items):
      raise AssertionError("data-set round trip is not exact")
    rows.append(
      (
        "ARDM per data set, one stream",
        8 * s.total_bytes / (N * dims),
        f"{s.total_bytes} B incl. header; exact",
        1e3 * s.seconds / N,
        1e3 * ds.seconds / N,
        s.network_calls / N,
      )
    )
  summary = {
    "order_seed": seed,
    "search_bpd": scores,
    "container_overhead_bytes": np.mean(files) - payload / N,
    "payload_vs_nll": (8 * payload - nll) / N,
    "steps": len(steps),
    "policy": label,
  }
  return rows, summary


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--digits-workdir", default=None, help="trained experiments/digits.py workdir")
  parser.add_argument("--cifar-workdir", default=None, help="trained experiments/cifar10_subset.py workdir")
  parser.add_argument("--digits-budget", type=int, default=None, help="policy steps (default: one per pixel)")
  parser.add_argument("--digits-naive", action="store_true", help="evenly spaced steps instead of the DP policy")
  parser.add_argument("--digits-search-items", type=int, default=64, help="training items for the order search")
  parser.add_argument("--cifar-budget", type=int, default=10, help="policy steps (default DP from policy.json)")
  parser.add_argument("--cifar-naive", action="store_true", help="evenly spaced steps instead of the DP policy")
  parser.add_argument("--cifar-search-items", type=int, default=16, help="training items for the order search")
  parser.add_argument("--cifar-items", type=int, default=500, help="test images to code (all 500 by default)")
  parser.add_argument("--cifar-stream", action="store_true", help="also code the test set as one stream")
  parser.add_argument(
    "--cifar-batched",
    action="store_true",
    help="code the per-image streams in one batched pass (CPU time) instead of file by file",
  )
  parser.add_argument("--cifar-step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--search-orders", type=int, default=5, help="orders tried on training items (paper: 5)")
  args = parser.parse_args(argv)
  table = [
    "| data | method | bits/dim | note | encode ms/item | decode ms/item | network calls/item |",
    "|---|---|---|---|---|---|---|",
  ]
  notes = []
  datasets = (
    (
      "digits test (300, 8x8x1, K=17)",
      args.digits_workdir,
      None,
      args.digits_budget,
      args.digits_naive,
      args.digits_search_items,
      None,
      True,
      False,
    ),
    (
      "CIFAR-10 subset test (32x32x3)",
      args.cifar_workdir,
      args.cifar_step,
      args.cifar_budget,
      args.cifar_naive,
      args.cifar_search_items,
      args.cifar_items,
      args.cifar_stream,
      args.cifar_batched,
    ),
  )
  for name, workdir, step, budget, naive, search_items, limit, stream, batched in datasets:
    if workdir is None:
      continue
    cm = coding_model.open_coding_model(workdir, step)
    items = data.load(cm.model.config.data).eval_items("test")[:limit]
    name = name if limit is None or limit >= 500 else f"{name}, first {len(items)}"
    start = time.time()
    rows, summary = ardm_rows(cm, items, budget, naive, args.search_orders, search_items, stream, batched)
    for method, bpd, note in baselines(items, cm.spec.num_classes):
      table.append(f"| {name} | {method} | {bpd:.3f} | {note} | | | |")
    for method, bpd, note, enc, dec, calls in rows:
      fmt = lambda v, f: "" if v is None else format(v, f)
      table.append(
        f"| {name} | {method} | {bpd:.3f} | {note} | {fmt(enc, '.1f')} | {fmt(dec, '.1f')} | {fmt(calls, '.3g')} |"
      )
    cfg = cm.model.config
    notes.append(
      f"- {name}: model step {cm.model.step} (train.num_steps={cfg.train.num_steps}, batch "
      f"{cfg.train.batch_size}, EMA params), config hash {cm.model.config_hash[:12]}; policy "
      f"{summary['policy']} with {summary['steps']} steps; order seed {summary['order_seed']} chosen from "
      f"{args.search_orders} on {search_items} training items (train bits/dim "
      f"{', '.join(f'{v:.4f}' for v in summary['search_bpd'])}); container overhead per image file "
      f"{summary['container_overhead_bytes']:.1f} B (header + CRC (+ length); payload - NLL "
      f"{summary['payload_vs_nll']:.1f} bits per image); {time.time() - start:.0f}s"
    )
  print("\n".join(table))
  print()
  print("\n".join(notes))


if __name__ == "__main__":
  main()
