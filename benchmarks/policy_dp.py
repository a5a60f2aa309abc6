"""Times the exact O(B·D log D) policy DP against the plain O(B·D²) DP and prints a markdown table.

    python benchmarks/policy_dp.py                      # D in 250, 3072, 16000; budgets 10..1000
    python benchmarks/policy_dp.py --sizes 250 --plain-limit 5

The plain DP is skipped where its estimate (per-layer time of a short run, scaled linearly in the number of
layers, which is B - 1) exceeds --plain-limit seconds; the row then says "skipped (est. X s)".
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ardm_jax import policy  # noqa: E402  (runs from a checkout without installing)


def synthetic_losses(D, seed):
  """Realistic per-step loss curve in bits per variable: high when little is known, near zero at the end."""
  rng = np.random.default_rng(seed)
  t = np.arange(D)
  raw = 6.0 * (1 - t / D) ** 1.5 + 0.05 * np.abs(rng.normal(size=D))
  return policy.monotone_losses(raw, "sort")


def timed(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--sizes", default="250,3072,16000", help="comma-separated numbers of steps D")
  ap.add_argument("--budgets", default="10,50,100,500,1000", help="comma-separated budgets (those <= D run)")
  ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast DP (median reported)")
  ap.add_argument("--plain-limit", type=float, default=60.0, help="skip plain DP runs estimated above this (s)")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  budgets = [int(b) for b in args.budgets.split(",")]

  print(
    f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
    f"python {platform.python_version()}, numpy {np.__version__}\n"
  )
  print("| D | budget | fast DP (s) | plain DP (s) | speed-up | costs agree | DP bpd | naive bpd |")
  print("|---|---|---|---|---|---|---|---|")
  for D in sizes:
    L = synthetic_losses(D, args.seed)
    # Per-layer time of the plain DP from a short run (3 dense layers) predicts longer runs.
    probe_s, _ = timed(lambda: policy.plain_dp(L, 4), 1)
    for b in [b for b in budgets if b <= D]:
      fast_s, out = timed(lambda: policy.optimal_policies(L, [b], monotone=None), args.repeats)
      steps, cost = out[b]
      naive = policy.policy_cost(L, policy.naive_policy(D, b))
      est = probe_s * (b - 1) / 3
      if est > args.plain_limit:
        plain, ratio, agree = f"skipped (est. {est:.0f} s)", f"~{est / fast_s:.0f}x (est.)", "n/a"
      else:
        plain_s, (_, ref_cost) = timed(lambda: policy.plain_dp(L, b), 1 if est > 5 else args.repeats)
        plain, ratio = f"{plain_s:.3f}", f"{plain_s / fast_s:.1f}x"
        agree = "yes" if abs(cost - ref_cost) <= 1e-9 * abs(ref_cost) else f"NO ({cost} vs {ref_cost})"
      print(
        f"| {D} | {b} | {fast_s:.4f} | {plain} | {ratio} | {agree} | {cost / D:.4f} | {naive / D:.4f} |", flush=True
      )
  print()
  L = synthetic_losses(3072, args.seed)
  secs, _ = timed(lambda: policy.optimal_policies(L, range(1, 501), monotone=None), 1)
  print(f"all budgets 1..500 for D=3072: {secs:.2f} s")
  L = synthetic_losses(16000, args.seed)
  secs, _ = timed(lambda: policy.optimal_policies(L, [10, 50, 100, 500, 1000], monotone=None), 1)
  print(f"D=16000, budgets up to 1000: {secs:.2f} s")


if __name__ == "__main__":
  main()
