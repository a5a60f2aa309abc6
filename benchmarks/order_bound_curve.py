"""How far is the ELBO from the model's likelihood? The bound over K orders (ardm_jax/order_bound.py) for K = 1..64.

  python -P benchmarks/order_bound_curve.py              # about 15 minutes on 2 CPU cores once the models exist
  python -P benchmarks/order_bound_curve.py --train      # first trains the missing text models (~10 min more)

Models: the digits default (experiments/digits.py, `ardm train --config experiments/digits.py --workdir
runs/digits`), and the pydoc text OA-ARDM and its single-order ARM reference trained as benchmarks/reproduce.py trains
its text models (experiments/local_text.py:pydoc and local_text_arm.py:pydoc with reproduce.MODELS' overrides; with
--train they are trained into ROOT/text_oa and ROOT/text_arm when missing).

On a fixed random subset of --items test items per data set (standard errors over items): for each item --orders
independent uniformly random orders and the exact log-likelihood under each (all D = 64 network calls), then
log-mean-exp over the first K orders for every K = 1..64 (the same draws, so the curve is a paired comparison);
beside it the ELBO of the same parameters on the same items, twice: the mean of the same per-order exact NLLs (an
unbiased ELBO estimate; the gain of the bound over it is paired per item and shares the draws, so it has little
noise) and --passes independent one-call estimates per item (the estimator `ardm eval` reports); for text also the
ARM's exact NLL under its fixed raster order. Prints a
markdown table, writes ROOT/order_bound_curve.json and a PNG of bits against K (--png).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ardm_jax import configs, data, held_out, order_bound, train, workdir  # noqa: E402

# Rows of (item, order) per network call: enough to keep the 2 cores busy without large padding.
ROW_BATCH = {"digits": 256, "text": 128}
UNITS = {"digits": "bits/dim", "text": "bits/char"}


def _log(msg: str, t0: float) -> None:
  print(f"[{(time.time() - t0) / 60:5.1f} min] {msg}", file=sys.stderr, flush=True)


def _open_or_train(path: str, config_file: str, overrides: list[str], may_train: bool):
  config = configs.apply_overrides(configs.load_config_file(os.path.join(REPO, "experiments", config_file)), overrides)
  done = os.path.isfile(os.path.join(path, configs.CONFIG_FILE)) and workdir.open_workdir(path).step >= int(
    config.train.num_steps
  )
  if not done:
    if not may_train:
      sys.exit(f"{path} is not a finished {config_file} workdir; train it first (or pass --train)")
    train.train_and_evaluate(config, path)
  return workdir.open_workdir(path)


def _subset(items: np.ndarray, num: int, seed: int) -> np.ndarray:
  idx = np.sort(np.random.default_rng(seed).choice(len(items), min(num, len(items)), replace=False))
  return items[idx]


def _mean_stderr(values) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def measure(model, items, args, t0) -> dict:
  """The curve for every K = 1..orders, the ELBO, and the per-item arrays the table needs."""
  setup, num_dims = model.setup, model.spec.num_steps
  kind = "digits" if model.spec.kind == "image" else "text"
  with setup.context():
    elbo = held_out.evaluate_params(
      setup, model.params, items, passes=args.passes, batch_size=int(model.config.train.eval_batch_size), seed=args.seed
    )
    _log(
      f"{kind}: ELBO {elbo['bpd']:.4f} ± {elbo['stderr']:.4f} on {len(items)} items; now "
      f"{len(items) * args.orders} orders x {num_dims} calls",
      t0,
    )
    start = time.time()
    ll = order_bound.order_log_likelihoods(
      setup.apply_fn,
      setup.objective,
      model.params,
      items,
      num_orders=args.orders,
      batch_size=ROW_BATCH[kind],
      seed=args.seed,
      mesh=setup.mesh,
    )
    seconds = time.time() - start
  per_k = [order_bound.bound_bits(ll, num_dims, k) for k in range(1, args.orders + 1)]
  order_mean = (-ll.sum(axis=2) / (num_dims * np.log(2.0))).mean(axis=1)  # the ELBO from the same orders
  return {
    "kind": kind,
    "unit": UNITS[kind],
    "workdir": model.workdir,
    "step": model.step,
    "num_items": len(items),
    "orders": args.orders,
    "elbo_passes": args.passes,
    "elbo": [elbo["bpd"], elbo["stderr"]],
    "order_mean": list(_mean_stderr(order_mean)),
    "curve": [_mean_stderr(b) for b in per_k],
    "gain_over_order_mean": [_mean_stderr(order_mean - b) for b in per_k],
    "gain_over_elbo": [_mean_stderr(elbo["per_item"] - b) for b in per_k],
    "orders_seconds": round(seconds, 1),
    "bound_per_item": per_k[-1].tolist(),
  }


def _fmt(pair, digits=3) -> str:
  return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def table(results: dict) -> str:
  """Per data set: the bound at K and how far it is below the ELBO of the same orders (paired per item)."""
  names = list(results)
  num_orders = results[names[0]]["orders"]
  head = " | ".join(f"{n}: bound ({results[n]['unit']}) | {n}: ELBO − bound" for n in names)
  lines = [f"| K orders | {head} |", "|---" * (2 * len(names) + 1) + "|"]
  for k in order_bound.curve_ks(num_orders):
    lines.append(
      f"| {k} | "
      + " | ".join(
        f"{_fmt(results[n]['curve'][k - 1])} | {_fmt(results[n]['gain_over_order_mean'][k - 1], 4)}" for n in names
      )
      + " |"
    )
  rows = [
    (f"ELBO: mean of the {num_orders} exact per-order NLLs (same draws)", lambda r: (_fmt(r["order_mean"]), "")),
    (
      f"ELBO: {results[names[0]]['elbo_passes']} one-call estimates per item (independent draws)",
      lambda r: (_fmt(r["elbo"]), _fmt(r["gain_over_elbo"][-1], 4) + f" at K = {num_orders}"),
    ),
    (
      "ARM: exact NLL in its fixed raster order",
      lambda r: (
        (_fmt(r["arm"]), f"ARM − bound at K = {num_orders}: {_fmt(r['arm_minus_bound'])}") if "arm" in r else ("-", "")
      ),
    ),
  ]
  for label, fn in rows:
    lines.append(f"| {label} | " + " | ".join(" | ".join(fn(results[n])) for n in names) + " |")
  return "\n".join(lines)


def plot(results: dict, path: str) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=(4.2 * len(results), 3.4), dpi=90)
  FigureCanvasAgg(fig)
  for i, (name, r) in enumerate(results.items()):
    ax = fig.add_subplot(1, len(results), i + 1)
    ks = np.arange(1, r["orders"] + 1)
    bound = np.array([c[0] for c in r["curve"]])
    # The band is the paired standard error of (ELBO - bound) on the same orders: the spread of the items, which
    # is common to every line, is left out.
    band = np.array([g[1] for g in r["gain_over_order_mean"]])
    ax.plot(ks, bound, color="C0", label="bound over K orders")
    ax.fill_between(ks, bound - band, bound + band, color="C0", alpha=0.25, linewidth=0)
    ax.axhline(r["order_mean"][0], color="C1", linestyle="--", label="ELBO (mean over the same orders)")
    if "arm" in r:
      ax.axhline(r["arm"][0], color="C2", linestyle=":", label="ARM (one order, exact)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K orders per item")
    ax.set_ylabel(r["unit"])
    ax.set_title(f"{name}: {r['num_items']} test items", fontsize=10)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.join(REPO, "runs", "order_bound"))
  parser.add_argument("--digits", default=os.path.join(REPO, "runs", "digits"), help="digits default workdir")
  parser.add_argument("--train", action="store_true", help="train the missing workdirs first")
  parser.add_argument("--items", type=int, default=64, help="test items per data set (a fixed random subset)")
  parser.add_argument("--orders", type=int, default=64)
  parser.add_argument("--passes", type=int, default=64, help="one-call ELBO estimates per item")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--only", choices=["digits", "text"], default=None)
  parser.add_argument("--png", default=os.path.join(REPO, "benchmarks", "order_bound_curve.png"))
  args = parser.parse_args()
  import reproduce  # pylint: disable=import-outside-toplevel  (benchmarks/: its text models' overrides)

  t0 = time.time()
  os.makedirs(args.root, exist_ok=True)
  results = {}
  if args.only in (None, "digits"):
    model = _open_or_train(args.digits, "digits.py", [], args.train)
    items = _subset(data.load(model.config.data).eval_items("test"), args.items, args.seed)
    results["digits"] = measure(model, items, args, t0)
    _log(f"digits done ({results['digits']['orders_seconds']:.0f} s for the orders)", t0)
  if args.only in (None, "text"):
    models = {
      role: _open_or_train(os.path.join(args.root, f"text_{role}"), *reproduce.MODELS[("text", role)], args.train)
      for role in ("oa", "arm")
    }
    items = _subset(data.load(models["oa"].config.data).eval_items("test"), args.items, args.seed)
    r = measure(models["oa"], items, args, t0)
    arm = models["arm"]
    with arm.setup.context():
      arm_eval = held_out.evaluate_params(
        arm.setup, arm.params, items, passes=1, batch_size=int(arm.config.train.eval_batch_size), seed=args.seed
      )
    r["arm"] = [arm_eval["bpd"], arm_eval["stderr"]]
    r["arm_minus_bound"] = list(_mean_stderr(arm_eval["per_item"] - np.asarray(r["bound_per_item"])))
    results["text"] = r
    _log(f"text done ({r['orders_seconds']:.0f} s for the orders)", t0)
  commit = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
  ).stdout.strip()
  out = {"commit": commit, "seconds": round(time.time() - t0, 1), "args": vars(args), "results": results}
  with open(os.path.join(args.root, "order_bound_curve.json"), "w") as f:
    json.dump(out, f, indent=1)
  plot(results, args.png)
  print(table(results))
  print(
    f"\n{time.time() - t0:.0f} s in all (commit {commit}); wrote {args.png} and "
    f"{os.path.join(args.root, 'order_bound_curve.json')}"
  )


if __name__ == "__main__":
  main()
