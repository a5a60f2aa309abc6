"""Measured bits/dim against the number of network calls, DP-optimal vs evenly spaced policies, on a trained model.

  python benchmarks/policy_digits.py --workdir runs/digits [--budgets 1,2,5,10,20,32] [--passes 4]

Estimates L_t on the training split (stratified over t), computes DP policies, then measures the test NLL under each policy
exactly per random order (all B calls), with the same orders for DP and naive (a paired comparison). Prints a
markdown table: predicted and measured bpd for both policies, the paired difference, and the full-step bpd.
Writes nothing into the workdir.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ardm_jax import data, policy, workdir  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--budgets", default="1,2,5,10,20,32")
  parser.add_argument("--passes", type=int, default=4, help="random orders per test item")
  parser.add_argument("--samples", type=int, default=1024, help="training-set draws per step for L_t")
  parser.add_argument(
    "--monotone",
    choices=["sort", "isotonic"],
    default="isotonic",
    help="how the noisy L_t estimate is made non-increasing before the DP",
  )
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  budgets = [int(b) for b in args.budgets.split(",")]

  model = workdir.open_workdir(args.workdir)
  dataset = data.load(model.config.data)
  test = dataset.eval_items("test")
  held_out = dataset.eval_items("train")  # fit the policy on training data, measure on test
  num_steps = model.spec.num_steps
  batch = len(test)
  start = time.time()
  with model.setup.context():
    losses, stderr = held_out.estimate_lt(
      model.setup, model.params, held_out, samples_per_step=args.samples, batch_size=batch, seed=args.seed + 1
    )
    policies = policy.optimal_policies(losses, budgets, args.monotone)
    full = held_out.evaluate_params(
      model.setup,
      model.params,
      test,
      passes=args.passes,
      batch_size=batch,
      seed=args.seed,
      policy=np.arange(num_steps),
      exact=True,
    )
    rows = []
    for b in budgets:
      dp_steps, dp_cost = policies[b]
      naive_steps = policy.naive_policy(num_steps, b)
      dp = held_out.evaluate_params(
        model.setup,
        model.params,
        test,
        passes=args.passes,
        batch_size=batch,
        seed=args.seed,
        policy=dp_steps,
        exact=True,
      )
      naive = held_out.evaluate_params(
        model.setup,
        model.params,
        test,
        passes=args.passes,
        batch_size=batch,
        seed=args.seed,
        policy=naive_steps,
        exact=True,
      )
      diff = dp["per_item"] - naive["per_item"]
      rows.append(
        (
          b,
          dp_cost / num_steps,
          policy.policy_cost(policy.monotone_losses(losses, args.monotone), naive_steps) / num_steps,
          dp,
          naive,
          diff.mean(),
          diff.std(ddof=1) / np.sqrt(len(diff)),
        )
      )
  print(
    f"model: {args.workdir} step {model.step} ({model.params_kind} params); test items {len(test)}, "
    f"{args.passes} random orders each; L_t from {args.samples} training-set draws per step, "
    f"made monotone by {args.monotone}; "
    f"{time.time() - start:.0f}s"
  )
  print(f"full sequential ({num_steps} calls): {full['bpd']:.4f} ± {full['stderr']:.4f} bits/dim")
  print("| budget | DP predicted | DP measured | naive predicted | naive measured | DP − naive (paired) | DP vs full |")
  print("|---|---|---|---|---|---|---|")
  for b, dp_pred, naive_pred, dp, naive, d, d_se in rows:
    print(
      f"| {b} | {dp_pred:.4f} | {dp['bpd']:.4f} ± {dp['stderr']:.4f} | {naive_pred:.4f} | "
      f"{naive['bpd']:.4f} ± {naive['stderr']:.4f} | {d:+.4f} ± {d_se:.4f} | "
      f"{100 * (dp['bpd'] / full['bpd'] - 1):+.1f} % |"
    )


if __name__ == "__main__":
  main()
