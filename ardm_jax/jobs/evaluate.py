"""`ardm eval`: held-out bits/dim with its standard error (ardm_jax/held_out.py), under a parallel policy with
--budget, or the tighter bound over K orders with --orders K (ardm_jax/order_bound.py)."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from ardm_jax import ardm, data, file_io, held_out, objective, order_bound, sample
from ardm_jax.jobs import model_source, options


def add_parser(sub) -> None:
  p = sub.add_parser("eval", description="held-out bits/dim with standard error -> WORKDIR/eval_stepN.json")
  options.add_model_source(p, data=True)
  options.add_step(p)
  options.add_out(
    p,
    "result JSON (default WORKDIR/eval[...]_stepN.json, never an existing name: a rerun adds -1, -2...; required "
    "with --model)",
  )
  options.add_overwrite(p, "replace an existing --out file")
  p.add_argument("--passes", type=int, default=1, help="independent estimates per item")
  p.add_argument("--split", default="test", help="held-out split to evaluate")
  p.add_argument(
    "--num-items",
    type=int,
    default=None,
    metavar="N",
    help="evaluate the split's first N items only (default all; the file name then ends in _itemsN)",
  )
  p.add_argument("--raw", action="store_true", help="evaluate the raw parameters instead of the EMA ones")
  p.add_argument("--batch-size", type=int, default=None, help="items per batch (default train.eval_batch_size)")
  options.add_policy_args(p)
  p.add_argument(
    "--exact",
    action="store_true",
    help="with --budget: run every policy call for one random order per item (lower variance); "
    "for a D3PM baseline: every one of its steps",
  )
  p.add_argument(
    "--orders",
    type=int,
    default=None,
    metavar="K",
    help="the tighter bound over K random orders per item (exact likelihood under each, all steps or "
    "the --budget policy; log-mean-exp over them), the curve for K = 1, 2, 4, ..., K beside the "
    "ELBO -> WORKDIR/eval_orders_K[_bB]_stepN.json",
  )
  p.add_argument("--seed", type=int, default=0)


def run(args) -> None:
  model_source.enable_compile_cache(args.workdir)
  options.out_required_with_model(args, "the result JSON")
  if args.out and os.path.exists(args.out) and not args.overwrite:
    raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it or choose another --out")
  options.resolve_model(args)
  model = model_source.open_model(args, use_ema=not args.raw)
  dataset = data.load(model.config.data)
  if args.split not in dataset.splits:
    raise ValueError(f"split {args.split!r} does not exist for {dataset.name}; choose one of {list(dataset.splits)}")
  items = eval_items(dataset, args.split, args.num_items)
  if args.orders is not None:
    run_orders(args, model, items)
    return
  setup, steps = model.setup, None
  if objective.is_baseline(setup.objective):  # --budget is the baseline's number of generation steps
    if args.naive or args.policy:
      raise ValueError(
        "--naive and --policy are for ARDM policies; a baseline takes only --budget (and, for "
        "D3PM, --exact: all T steps per item)"
      )
    setup = dataclasses.replace(
      setup, objective=objective.with_generation_budget(setup.objective, args.budget, model.spec.num_steps)
    )
  elif args.budget is not None:
    steps = sample.choose_policy(model, args.budget, args.naive, args.policy, split=args.budget_split)
  batch_size = args.batch_size or int(model.config.train.eval_batch_size)
  start = time.time()
  with setup.context():
    result = held_out.evaluate_params(
      setup,
      model.params,
      items,
      passes=args.passes,
      batch_size=batch_size,
      seed=args.seed,
      policy=steps,
      exact=args.exact,
    )
  del result["per_item"]
  # A baseline's --budget is its number of generation steps (D3PM) rather than a policy.
  budget = len(steps) if steps is not None else args.budget
  result |= {
    "split": args.split,
    "step": model.step,
    "params": model.params_kind,
    "unit": held_out.unit_name(model.spec),
    "budget": budget,
    "objective": getattr(setup.objective, "name", "ardm"),
    "policy": None if steps is None else ("naive" if args.naive else "dp"),
    "budget_split": None
    if steps is None or setup.objective.num_stages == 1
    else ("equal" if args.naive else args.budget_split),
    "estimator": (
      "one call per item"
      if not args.exact
      else "exact per order"
      if steps is not None
      else "every step, one mask draw each"
    ),
    "config_hash": model.config_hash,
    "seconds": round(time.time() - start, 2),
  }
  stem = (
    "eval"
    if budget is None
    else f"eval_budget{budget}{'_naive' if args.naive else ''}{'_exact' if args.exact else ''}"
    f"{'_equal' if result['budget_split'] == 'equal' and not args.naive else ''}"
  )
  stem += "" if args.num_items is None else f"_items{len(items)}"
  path = args.out or file_io.unused_path(os.path.join(args.workdir, f"{stem}_step{model.step}"), ".json")
  held_out.write_json(path, result)
  calls = (
    len(steps)
    if steps is not None
    else (
      setup.objective.generation_calls(model.spec.num_steps)
      if objective.is_baseline(setup.objective)
      else model.spec.num_steps
    )
  )
  print(
    f"{args.split} {result['unit']} ({result['params']} params, step {model.step}, {args.passes} pass(es), "
    f"{calls} steps): {result['bpd']:.4f} ± {result['stderr']:.4f} -> {path}"
  )


def eval_items(dataset, split: str, num_items: int | None):
  """The held-out items of `split`, the first `num_items` of them when given (a cheaper, fixed subset)."""
  items = dataset.eval_items(split)
  if num_items is None:
    return items
  if num_items < 1 or num_items > len(items):
    raise ValueError(f"--num-items must be between 1 and the {len(items)} items of split {split!r}, got {num_items}")
  return items[:num_items]


def check_orders_args(args, model) -> None:
  """One-line refusals for `ardm eval --orders K` before any work."""
  ardm.check_int("--orders", args.orders, 1)
  objective.require_ardm(model.setup.objective, "ardm eval --orders (the bound over orders)")
  if args.exact:
    raise ValueError("--orders already runs every call of each order exactly; drop --exact")
  if (args.naive or args.policy) and args.budget is None:
    raise ValueError("--naive and --policy choose a parallel policy: pass --budget B with them")


def run_orders(args, model, items: np.ndarray) -> str:
  """`--orders K [--budget B]`: writes --out or WORKDIR/eval_orders_K[_bB].json and prints the curve; returns the
  path. `items`: the held-out items to evaluate (the split, or its first --num-items). As every default output, the
  file never replaces an earlier one (file_io.unused_path); `run` refuses an existing --out without --overwrite
  before it opens the model."""
  check_orders_args(args, model)
  setup = model.setup
  steps = None
  if args.budget is not None:
    steps = sample.choose_policy(model, args.budget, args.naive, args.policy, split=args.budget_split)
  batch_size = args.batch_size or int(model.config.train.eval_batch_size)
  start = time.time()
  with setup.context():
    result = order_bound.evaluate_orders(
      setup,
      model.params,
      items,
      num_orders=args.orders,
      passes=args.passes,
      batch_size=batch_size,
      seed=args.seed,
      policy=steps,
    )
  equal = steps is not None and setup.objective.num_stages > 1 and not args.naive and args.budget_split == "equal"
  unit = held_out.unit_name(model.spec)
  result |= {
    "split": args.split,
    "step": model.step,
    "params": model.params_kind,
    "unit": unit,
    "budget": None if steps is None else len(steps),
    "calls_per_order": len(steps) if steps is not None else setup.objective.num_stages * model.spec.num_steps,
    "policy": None if steps is None else ("naive" if args.naive else "dp"),
    "budget_split": None
    if steps is None or setup.objective.num_stages == 1
    else ("equal" if args.naive else args.budget_split),
    "orders_per": "stage" if setup.objective.num_stages > 1 else "item",
    "seed": args.seed,
    "config_hash": model.config_hash,
    "seconds": round(time.time() - start, 2),
  }
  name = order_bound.output_stem(
    args.orders, result["budget"], model.step, args.naive, equal, None if args.num_items is None else len(items)
  )
  path = args.out or file_io.unused_path(os.path.join(args.workdir, name), ".json")
  held_out.write_json(path, result)
  gain, last = result["gain_over_elbo"], result["curve"][-1]
  print(
    f"{args.split}, {result['num_items']} items, {args.orders} orders per item"
    f"{' and stage' if result['orders_per'] == 'stage' else ''}, {result['calls_per_order']} calls per order "
    f"({result['params']} params, step {model.step}):"
  )
  print(order_bound.format_table(result, unit))
  print(
    f"bound at K = {args.orders} is {last['gain_over_order_mean']:.4f} ± {last['gain_over_order_mean_stderr']:.4f} "
    f"{unit} below the ELBO of its orders ({gain['bits']:.4f} ± {gain['stderr']:.4f} below the one-call "
    f"estimate) -> {path}"
  )
  return path
