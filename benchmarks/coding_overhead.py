"""Host-side cost of the coding walk, before vs after, in one process:

    python benchmarks/coding_overhead.py                          # per-row overhead, toy network
    python benchmarks/coding_overhead.py --workdir runs/digits    # plus overlap of host coding and device calls

1. Per-row overhead: per-item streams of B items over D one-call steps with a network-free predict (a fixed table),
   so only the coder's Python and NumPy work is timed; the baseline is `ardm_jax/coding.py` as of --baseline
   (default: the last commit before tables were quantised once per step for all items), loaded from git.
2. Overlap (with --workdir): `coding_items.compress_items` of N test items of a trained model with the Predictor as is
   (step k + 1 dispatched to the device before step k is coded) against the same Predictor hidden behind a plain
   call (device and host strictly in turn). Exact round trips are checked.
Prints medians of --reps runs as a markdown table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from ardm_jax.coding import orders, walk  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def baseline_coding(commit: str) -> types.ModuleType:
  src = subprocess.run(
    ["git", "-C", REPO, "show", f"{commit}:ardm_jax/coding.py"], capture_output=True, text=True, check=True
  ).stdout
  module = types.ModuleType("coding_baseline")
  sys.modules[module.__name__] = module  # dataclasses look their module up
  exec(compile(src, "coding_baseline", "exec"), module.__dict__)  # pylint: disable=exec-used
  return module


def median_seconds(fn, reps: int) -> float:
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def per_row_rows(baseline, B: int, D: int, K: int, reps: int) -> list[tuple]:
  rng = np.random.default_rng(0)
  table = rng.normal(size=(D, K)).astype(np.float32)

  def predict(x, known, t):
    del known, t
    return np.broadcast_to(table, (len(x), D, K)).copy()

  x = rng.integers(0, K, (B, D)).astype(np.int32)
  sigma, policy = orders.order_from_seed(0, D), np.arange(D)
  rows = []
  for name, module in (("baseline", baseline), ("now", walk)):

    def run(module=module):
      payloads = module.encode_items(predict, x, sigma, policy, K)
      assert np.array_equal(module.decode_items(predict, payloads, sigma, policy, B, D, K), x)

    seconds = median_seconds(run, reps)
    rows.append((f"per-item streams, {B} items x {D} steps, K={K}: {name}", seconds, 1e3 * seconds / (2 * B * D)))
  return rows


class PlainCall:
  """The Predictor without `dispatch`: each step's device work starts only when the coder asks for it."""

  positions_only = True

  def __init__(self, predictor):
    self.predictor = predictor
    self.symbols = predictor.symbols

  def __call__(self, *args):
    return self.predictor(*args)

  def __getattr__(self, name):
    if name == "dispatch":
      raise AttributeError(name)
    return getattr(self.predictor, name)


def overlap_rows(workdir: str, num_items: int, reps: int) -> list[tuple]:
  from ardm_jax import coding_items, coding_model, coding_policy, data  # pylint: disable=import-outside-toplevel

  cm = coding_model.open_coding_model(workdir)
  items = data.load(cm.model.config.data).eval_items("test")[:num_items]
  steps, _ = coding_policy.encoder_policy(cm, None)
  coding_items.compress_items(cm, items, mode="item", steps=steps, order_seed=0)  # compiles
  rows, blobs = [], {}
  for name, predictor in (("strictly in turn", PlainCall(cm.predictor)), ("overlapped", cm.predictor)):
    run_cm = coding_model.CodingModel(cm.model, cm.fingerprint, predictor)

    def run(run_cm=run_cm, name=name):
      blobs[name], _ = coding_items.compress_items(run_cm, items, mode="item", steps=steps, order_seed=0)

    seconds = median_seconds(run, reps)
    rows.append(
      (f"compress {len(items)} items of {workdir} ({len(steps)} steps): {name}", seconds, 1e3 * seconds / len(steps))
    )
  assert blobs["strictly in turn"] == blobs["overlapped"], "overlap changed the bytes"
  _, out, _ = coding_items.decompress_items(cm, blobs["overlapped"])
  assert np.array_equal(out, items)
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--baseline", default="6d0750e", help="commit whose coding.py is the baseline")
  ap.add_argument("--items", type=int, default=500)
  ap.add_argument("--steps", type=int, default=64)
  ap.add_argument("--classes", type=int, default=17)
  ap.add_argument("--workdir", default=None, help="a trained workdir for the overlap rows")
  ap.add_argument("--overlap-items", type=int, default=64)
  ap.add_argument("--reps", type=int, default=3)
  args = ap.parse_args()
  rows = per_row_rows(baseline_coding(args.baseline), args.items, args.steps, args.classes, args.reps)
  if args.workdir:
    rows += overlap_rows(args.workdir, args.overlap_items, args.reps)
  print("| what | median s | ms per row and direction (per step for compress) |")
  print("|---|---|---|")
  for name, seconds, unit in rows:
    print(f"| {name} | {seconds:.3f} | {unit:.4f} |")
  print(f"\nper-row ratio baseline / now: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
  main()
