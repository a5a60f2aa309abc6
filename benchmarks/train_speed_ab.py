"""Train steps/s of two checkouts, interleaved in one session: what a change to the trainer costs in speed.

    git worktree add /tmp/before <commit>
    python benchmarks/train_speed_ab.py --before /tmp/before --after . [--config experiments/digits.py]

Each run is a whole `python -m ardm_jax.cli train` process in a fresh workdir, with the checkout first on
PYTHONPATH and the same config and overrides. Its speed is the median of the steps/s its progress lines print after
the first (which includes the compile); runs alternate before / after so that a change in the machine's load hits
both. The table gives each run, the medians and the ratio after / before.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

RATE = re.compile(r"^step \d+/\d+ .*?([\d.]+) steps/s", re.M)


def run_once(checkout: str, config: str, overrides: list[str]) -> tuple[float, float]:
  """(median steps/s after the first progress line, wall seconds of the whole process)."""
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, "-m", "ardm_jax.cli", "train", "--config", config, "--workdir", os.path.join(tmp, "w")]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout), TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    out = subprocess.run(cmd + overrides, capture_output=True, text=True, env=env, cwd=tmp, check=False)
    wall = time.perf_counter() - start
  if out.returncode != 0:
    sys.exit(f"train_speed_ab: error: the run at {checkout} failed:\n{out.stderr[-2000:]}")
  rates = [float(r) for r in RATE.findall(out.stdout)]
  if len(rates) < 2:
    sys.exit(f"train_speed_ab: error: fewer than two rates in the output at {checkout}; raise --steps")
  return statistics.median(rates[1:]), wall


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--before", required=True, help="checkout of the baseline (a git worktree)")
  p.add_argument("--after", default=".", help="checkout of the change (default: this one)")
  p.add_argument("--config", default="experiments/digits.py")
  p.add_argument("--steps", type=int, default=150)
  p.add_argument("--log_every", type=int, default=25)
  p.add_argument("--runs", type=int, default=3)
  args = p.parse_args(argv)
  for path in (args.before, args.after):
    if not os.path.isfile(os.path.join(path, "ardm_jax", "cli.py")):
      p.error(f"{path} is not a checkout of this project (no ardm_jax/cli.py)")
  config = os.path.abspath(args.config)
  overrides = [
    f"--config.train.num_steps={args.steps}",
    f"--config.train.log_every={args.log_every}",
    f"--config.train.checkpoint_every={args.steps}",
    "--config.train.eval_every=0",
    "--config.train.eval_passes=0",
  ]
  rows = {"before": [], "after": []}
  for i in range(args.runs):
    for name in ("before", "after"):
      rate, wall = run_once(getattr(args, name), config, overrides)
      rows[name].append((rate, wall))
      print(f"[run {i + 1}/{args.runs}] {name}: {rate:.3f} steps/s, {wall:.1f} s wall", file=sys.stderr, flush=True)
  print(f"`python benchmarks/train_speed_ab.py --before {args.before} --after {args.after} --config {args.config}`")
  print(f"{args.steps} steps, steps/s = median of the progress lines after the first; {args.runs} interleaved runs\n")
  print("| checkout | steps/s per run | median steps/s | median wall s |")
  print("|---|---|---|---|")
  medians = {}
  for name, runs in rows.items():
    medians[name] = statistics.median(r for r, _ in runs)
    per_run = ", ".join(f"{r:.3f}" for r, _ in runs)
    print(f"| {name} | {per_run} | {medians[name]:.3f} | {statistics.median(w for _, w in runs):.1f} |")
  print(f"\nafter / before: {medians['after'] / medians['before']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
