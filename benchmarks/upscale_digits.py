"""Digits OA-ARDM against the digits Upscale ARDM at equal training steps: test bits/dim with standard errors.

  python -P benchmarks/upscale_digits.py --root runs [--passes 8] [--budgets 12,24]

Trains experiments/digits.py and experiments/digits_upscale.py into ROOT/digits and ROOT/digits_upscale (resuming
or reusing finished runs: the same network, optimiser, batch and number of steps), then evaluates both with EMA
parameters on the 300 test images: the ELBO over all steps (`--passes` random stages/steps/orders per image), and
for each total budget B the exact likelihood under the naive policy (B calls; the upscale model splits B equally
over its stages, as in the paper) for one random order per image and pass. Prints a markdown table.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ardm_jax import configs, data, held_out, policy, train, workdir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = (("OA-ARDM", "digits.py"), ("Upscale ARDM (base 4, data)", "digits_upscale.py"))


def _trained(config_file: str, path: str):
  config = configs.load_config_file(os.path.join(REPO, "experiments", config_file))
  start = time.time()
  if os.path.isfile(os.path.join(path, train.CONFIG_FILE)):
    model = workdir.open_workdir(path)
    if model.step >= int(config.train.num_steps):
      return model, 0.0  # finished earlier: reuse it
  train.train_and_evaluate(config, path)  # trains or resumes (and refuses a workdir of another config)
  return workdir.open_workdir(path), time.time() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, help="folder for the two workdirs")
  parser.add_argument("--passes", type=int, default=8, help="ELBO estimates per test image")
  parser.add_argument("--budgets", default="12,24", help="total network calls for the naive-policy columns")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  budgets = [int(b) for b in args.budgets.split(",") if b]
  rows = [
    "| model | stages | train steps | test bpd (ELBO, all steps) | "
    + " | ".join(f"exact bpd, naive {b} calls" for b in budgets)
    + " | train + eval s |",
    "|---|---|---|---|" + "---|" * len(budgets) + "---|",
  ]
  for label, config_file in MODELS:
    model, seconds = _trained(config_file, os.path.join(args.root, os.path.splitext(config_file)[0]))
    test = data.load(model.config.data).eval_items("test")
    S, D = model.setup.objective.num_stages, model.spec.num_steps
    start = time.time()
    with model.setup.context():
      elbo = held_out.evaluate_params(
        model.setup, model.params, test, passes=args.passes, batch_size=len(test), seed=args.seed
      )
      cells = []
      for b in budgets:
        steps = policy.naive_global_policy(S, D, b)
        r = held_out.evaluate_params(
          model.setup, model.params, test, passes=2, batch_size=len(test), seed=args.seed, policy=steps, exact=True
        )
        cells.append(f"{r['bpd']:.3f} ± {r['stderr']:.3f}")
    rows.append(
      f"| {label} | {S} | {model.step} | {elbo['bpd']:.4f} ± {elbo['stderr']:.4f} | "
      + " | ".join(cells)
      + f" | {seconds + time.time() - start:.0f} |"
    )
    print(f"  {label}: done", file=sys.stderr, flush=True)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
