"""The `ardm` command: thin subcommands over the library (train, eval, sample, inpaint, policy).

Every subcommand turns a bad input into one line `ardm: error: ...` with exit code 2, never a traceback.

Each command imports only what it runs: `--help` and `ardm policy --loss-file` (NumPy only) import no JAX, and
nothing but `ardm train` (metric writers) and the tfds data sources imports TensorFlow. Every command that compiles
first turns on the persistent compilation cache (ardm_jax/compile_cache.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# TensorFlow (imported by clu and tfds) is only used for TensorBoard files and data; keep its start-up noise out.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _budget(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"budget must be a positive number of network calls, got {value}")
  return value


def _checkpoint_step(text: str) -> int | str:
  if text == "best":
    return text
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"--step must be a step number or 'best', got {text!r}") from None


def _add_policy_args(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--budget",
    type=_budget,
    default=None,
    help="network calls under a parallel policy (default: one call per variable)",
  )
  p.add_argument("--policy", default=None, help="policy file (default WORKDIR/policy.json)")
  p.add_argument("--naive", action="store_true", help="evenly spaced steps instead of the DP policy")
  _add_budget_split_arg(p)


def _add_budget_split_arg(p: argparse.ArgumentParser) -> None:
  from ardm_jax.policy import BUDGET_SPLIT_KEYS  # pylint: disable=import-outside-toplevel  (NumPy only)

  # Not --split: eval and policy already take --split for the held-out data split.
  p.add_argument(
    "--budget-split",
    choices=tuple(BUDGET_SPLIT_KEYS),
    default="optimal",
    help="how an upscale model's total budget is divided over its stages for the DP policy: optimal "
    "(lowest expected bits, default) or equal (the paper's Table 7); --naive always splits "
    "equally; a one-stage model ignores it",
  )


def build_parser() -> argparse.ArgumentParser:
  from ardm_jax import model_dir  # pylint: disable=import-outside-toplevel  (light: defers its JAX imports)

  parser = argparse.ArgumentParser(prog="ardm", description="Autoregressive Diffusion Models in JAX")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("train", help="train (or resume) a model; overrides as --config.KEY=VALUE")
  p.add_argument("--config", required=True, help="experiment file, e.g. experiments/digits.py[:variant]")
  p.add_argument("--workdir", required=True)
  # Multi-host without a cluster manager; Cloud TPU VMs and SLURM job steps are detected automatically.
  p.add_argument("--coordinator_address", default=None, help="process 0's HOST:PORT (with the next two flags)")
  p.add_argument("--num_processes", type=int, default=None, help="number of processes in the run")
  p.add_argument("--process_id", type=int, default=None, help="this process's index in 0..num_processes-1")

  p = sub.add_parser("eval", help="held-out bits/dim with standard error -> WORKDIR/eval.json")
  model_dir.add_model_source(p, data=True)
  p.add_argument("--out", default=None, help="result JSON (default WORKDIR/eval[...].json; required with --model)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  p.add_argument("--passes", type=int, default=1, help="independent estimates per item")
  p.add_argument("--split", default="test")
  p.add_argument(
    "--num-items",
    type=int,
    default=None,
    metavar="N",
    help="evaluate the split's first N items only (default all; the file name then ends in _itemsN)",
  )
  p.add_argument("--raw", action="store_true", help="evaluate the raw parameters instead of the EMA ones")
  p.add_argument(
    "--step",
    type=_checkpoint_step,
    default=None,
    help="checkpoint: a step number or 'best' (lowest held-out bits/dim while training; default latest)",
  )
  p.add_argument("--batch-size", type=int, default=None)
  _add_policy_args(p)
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
    "ELBO -> WORKDIR/eval_orders_K[_bB].json",
  )
  p.add_argument("--seed", type=int, default=0)

  p = sub.add_parser("sample", help="draw samples: PNG grid for images, text file for text")
  model_dir.add_model_source(p)
  p.add_argument("--num", type=int, default=16)
  _add_policy_args(p)
  p.add_argument(
    "--out", default=None, help="output file (default WORKDIR/samples_STEP[_bB].png|txt; required with --model)"
  )
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--seed", type=int, default=0)

  p = sub.add_parser("inpaint", help="complete a partly given input (image + mask, or text with '_')")
  model_dir.add_model_source(p)
  p.add_argument("--input", required=True, help="image .png/.npy of the model's shape, or a .txt with '_' gaps")
  p.add_argument("--mask", default=None, help="image known-mask .png/.npy (non-zero = given; default top half)")
  p.add_argument("--num", type=int, default=8, help="completions to draw")
  _add_policy_args(p)
  p.add_argument("--out", default=None, help="default: beside the input as NAME.completed.png|txt")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--seed", type=int, default=0)

  p = sub.add_parser("policy", help="DP-optimal parallel schedules from L_t -> policy.json + PNG")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--loss-file", help="per-step losses (bits per variable) as .npy or .json; no model needed")
  model_dir.add_model_source(p, group=source, data=True)  # or estimate L_t with a trained model on held-out data
  p.add_argument("--budgets", required=True, help="comma-separated network-call budgets, e.g. 5,10,20,50")
  _add_budget_split_arg(p)  # the file keeps both splits; this picks the one printed and plotted
  p.add_argument(
    "--samples",
    type=int,
    default=None,
    help="held-out draws per step t (stratified; default max(16, 65536 // D): L_t noise is what the "
    "DP can exploit, so small models get many draws)",
  )
  p.add_argument("--split", default="test", help="held-out split for the L_t estimate")
  p.add_argument(
    "--stride",
    type=int,
    default=1,
    help="estimate L_t at every k-th step of each stage only (and its last), interpolating between: "
    "1/k of the network calls for long items (default 1: every step)",
  )
  p.add_argument("--use-tracker", action="store_true", help="use the running L_t saved during training instead")
  p.add_argument(
    "--monotone",
    choices=["sort", "isotonic"],
    default="sort",
    help="how L_t is made non-increasing before the DP (paper: sort)",
  )
  p.add_argument("--num-dims", type=int, default=None, help="data dims for bits/dim with --loss-file (default D)")
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument(
    "--out",
    default=None,
    help="policy JSON (default WORKDIR/policy.json; required with --model and --loss-file); a PNG is written beside it",
  )
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--seed", type=int, default=0)

  from ardm_jax import compress  # pylint: disable=import-outside-toplevel  (light: defers its JAX imports)

  compress.add_parsers(sub)
  model_dir.add_parser(sub)
  from ardm_jax import preflight  # pylint: disable=import-outside-toplevel  (light: imports JAX only when run)

  preflight.add_parser(sub)
  return parser


def _open_model(args, **kwargs):
  """The trained model of --workdir or --model (ardm_jax/model_dir.py)."""
  from ardm_jax import model_dir  # pylint: disable=import-outside-toplevel

  return model_dir.open_trained(args.workdir, args.model, data_path=getattr(args, "data_path", None), **kwargs)


def _out_required_with_model(args, what: str) -> None:
  if args.model is not None and args.out is None:
    raise ValueError(f"--out is required with --model: where to write {what} (nothing is written into a model folder)")


def _parse_budgets(text: str) -> list[int]:
  try:
    budgets = sorted({int(b) for b in text.split(",") if b.strip()})
  except ValueError:
    raise ValueError(f"--budgets must be comma-separated integers, got {text!r}") from None
  if not budgets:
    raise ValueError("--budgets is empty; pass e.g. --budgets 5,10,20")
  return budgets


def _enable_compile_cache(workdir_path: str | None = None, config=None) -> None:
  """The persistent compilation cache of a job on `workdir_path` (the config it was trained with) or of `config`.

  Reads only config.json: a missing or broken workdir is left to the job's own error message."""
  from ardm_jax import compile_cache, configs  # pylint: disable=import-outside-toplevel

  if config is None and workdir_path is not None:
    from etils import epath  # pylint: disable=import-outside-toplevel

    path = epath.Path(workdir_path) / configs.CONFIG_FILE
    try:
      config = configs.config_from_json(path) if path.is_file() else None
    except ValueError:  # unreadable JSON: the job reports it
      config = None
  compile_cache.enable(config)


def cmd_policy(args) -> None:
  import numpy as np

  from ardm_jax import policy  # NumPy only: --loss-file needs nothing else (no JAX)

  budgets = _parse_budgets(args.budgets)
  stderr, fingerprint = None, None
  _out_required_with_model(args, "the policy file")
  out = args.out or (os.path.join(args.workdir, "policy.json") if args.workdir else None)
  png = None if out is None else os.path.splitext(out)[0] + ".png"
  for path in (out, png):  # before the minutes of estimating L_t
    if path and os.path.exists(path) and not args.overwrite:
      raise FileExistsError(f"{path} exists; pass --overwrite to replace it or choose another --out")
  if args.use_tracker and args.model:
    raise ValueError(
      "--use-tracker needs --workdir: a model folder keeps no training tracker (estimate L_t on held-out data instead)"
    )
  if args.loss_file:
    if args.out is None:
      raise ValueError("--out is required with --loss-file")
    if args.use_tracker:
      raise ValueError("--use-tracker needs --workdir")
    losses, stderr = policy.load_loss_file(args.loss_file)
    num_dims = args.num_dims or len(losses)
    source = f"loss file {args.loss_file}"
  else:
    from ardm_jax import configs, data, evaluate, objective, workdir  # pylint: disable=import-outside-toplevel

    _enable_compile_cache(args.workdir)
    model = _open_model(args)
    objective.require_ardm(model.setup.objective, "ardm policy")
    num_dims = model.spec.num_steps
    fingerprint = {"step": model.step, "config_hash": model.config_hash, "params": model.params_kind}
    if args.use_tracker:
      losses, counts = workdir.restore_tracker(model)
      if np.any(counts < 2):
        raise ValueError(
          f"the training tracker has fewer than 2 samples for {int(np.sum(counts < 2))} steps; "
          "train longer or estimate on held-out data (drop --use-tracker)"
        )
      stderr, source = None, f"training tracker at step {model.step}"
      fingerprint["lt_source"] = configs.lt_tracker_name(model.config)
    else:
      items = data.load(model.config.data).eval_items(args.split)
      batch_size = args.batch_size or int(model.config.train.eval_batch_size)
      args.samples = args.samples or max(16, 65536 // (num_dims * model.setup.objective.num_stages))
      with model.setup.context():
        losses, stderr = evaluate.estimate_lt(
          model.setup,
          model.params,
          items,
          samples_per_step=args.samples,
          batch_size=batch_size,
          seed=args.seed,
          stride=args.stride,
        )
      every = "" if args.stride == 1 else f" at every {args.stride}th step (linearly interpolated between)"
      source = f"{args.samples} held-out draws per step on {args.split}{every}"
      fingerprint["lt_source"] = f"{args.split}, {args.samples} samples per step{every}"
  num_stages = len(losses) // num_dims if not args.loss_file else 1
  stage_losses = np.reshape(losses, (num_stages, -1))
  stage_stderrs = None if stderr is None else np.reshape(stderr, (num_stages, -1))
  if num_stages == 1:  # budgets are the stage's own
    pf = policy.build_policy_file(
      stage_losses, budgets, num_dims, stage_stderrs=stage_stderrs, monotone=args.monotone, fingerprint=fingerprint
    )
    entries = pf["stages"][0]["policies"]
  else:  # budgets are totals over all stages; the file keeps the optimal and the equal split of each
    pf = policy.build_policy_file(
      stage_losses,
      [],
      num_dims,
      stage_stderrs=stage_stderrs,
      monotone=args.monotone,
      fingerprint=fingerprint,
      total_budgets=budgets,
    )
    entries = policy.total_budget_entries(pf, args.budget_split)
  policy.save_policy_file(out, pf, overwrite=args.overwrite)
  dp_bpd = [entries[str(b)]["expected_bpd"] for b in budgets]
  naive_bpd = [entries[str(b)]["naive_expected_bpd"] for b in budgets]
  policy.plot_policy(png, losses, stderr, budgets, dp_bpd, naive_bpd, num_dims)
  how = {"optimal": "optimally", "equal": "equally"}[args.budget_split]
  stages_note = f" in {num_stages} stages (budgets are totals, split {how} over the stages)" if num_stages > 1 else ""
  print(f"L_t from {source}: sum = {np.sum(losses) / num_dims:.4f} bits/dim over {len(losses)} steps{stages_note}")
  print("| budget | DP expected bpd | naive expected bpd |")
  print("|---|---|---|")
  for b, d, n in zip(budgets, dp_bpd, naive_bpd):
    print(f"| {b} | {d:.4f} | {n:.4f} |")
  print(f"wrote {out} and {png}")


def cmd_train(args, overrides) -> None:
  from ardm_jax import distributed

  # Before anything touches JAX devices: jax.distributed cannot start afterwards.
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  from ardm_jax import configs, train

  config = configs.apply_overrides(configs.load_config_file(args.config), overrides)
  _enable_compile_cache(config=config)
  train.train_and_evaluate(config, args.workdir)
  _record_train_command(args, overrides)


def _record_train_command(args, overrides) -> None:
  """Appends the command to WORKDIR/train_commands.txt (the model card of `ardm export` quotes it); the process
  flags of a multi-host launch are left out, they say where it ran."""
  import shlex

  import jax

  from ardm_jax import configs

  if jax.process_index() != 0:
    return
  command = shlex.join(
    ["ardm", "train", "--config", str(args.config), "--workdir", str(args.workdir), *map(str, overrides)]
  )
  with open(os.path.join(args.workdir, configs.TRAIN_COMMANDS_FILE), "a") as f:
    f.write(command + "\n")


def cmd_eval(args) -> None:
  import dataclasses

  from ardm_jax import data, evaluate, objective, sample

  _enable_compile_cache(args.workdir)
  _out_required_with_model(args, "the result JSON")
  if args.out and os.path.exists(args.out) and not args.overwrite:
    raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it or choose another --out")
  model = _open_model(args, use_ema=not args.raw, step=args.step)
  dataset = data.load(model.config.data)
  if args.split not in dataset.splits:
    raise ValueError(f"split {args.split!r} does not exist for {dataset.name}; choose one of {list(dataset.splits)}")
  items = _eval_items(dataset, args.split, args.num_items)
  if args.orders is not None:
    from ardm_jax import order_bound  # pylint: disable=import-outside-toplevel

    order_bound.cmd_eval_orders(args, model, items)
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
    result = evaluate.evaluate_params(
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
    "unit": evaluate.unit_name(model.spec),
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
  # A chosen checkpoint's result (--step N|best) does not replace the latest checkpoint's file.
  path = args.out or os.path.join(args.workdir, stem + ("" if args.step is None else f"_step{model.step}") + ".json")
  evaluate.write_json(path, result)
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


def _eval_items(dataset, split: str, num_items: int | None):
  """The held-out items of `split`, the first `num_items` of them when given (a cheaper, fixed subset)."""
  items = dataset.eval_items(split)
  if num_items is None:
    return items
  if num_items < 1 or num_items > len(items):
    raise ValueError(f"--num-items must be between 1 and the {len(items)} items of split {split!r}, got {num_items}")
  return items[:num_items]


def _default_out(workdir, spec, step, budget, stem="samples"):
  ext = {"image": ".png", "text": ".txt", "audio": ""}[spec.kind]  # audio: a folder of WAVs
  base = os.path.join(workdir, f"{stem}_step{step}" + (f"_b{budget}" if budget else ""))
  path, i = base + ext, 1
  while os.path.exists(path):  # default names never replace an earlier result
    path, i = f"{base}-{i}{ext}", i + 1
  return path


def cmd_sample(args) -> None:
  from ardm_jax import objective, sample

  _enable_compile_cache(args.workdir)
  _out_required_with_model(args, "the samples")
  model = _open_model(args)
  out = args.out or _default_out(args.workdir, model.spec, model.step, args.budget)
  sample.check_writable(out, args.overwrite)
  start = time.time()
  if objective.is_baseline(model.setup.objective):
    if args.naive or args.policy:
      raise ValueError("--naive and --policy are for ARDM policies; a baseline takes only --budget")
    items, calls = sample.sample_baseline(model, args.num, args.budget, seed=args.seed)
  else:
    steps = sample.choose_policy(model, args.budget, args.naive, args.policy, split=args.budget_split)
    with model.setup.context():
      items = sample.sample(model, args.num, steps, seed=args.seed)
    calls = len(steps)
  sample.write_items(model.spec, items, out, overwrite=args.overwrite, scale=4 if model.spec.shape[0] <= 16 else 1)
  print(f"wrote {args.num} samples ({calls} network calls, {time.time() - start:.1f}s) to {out}")


def cmd_inpaint(args) -> None:
  import numpy as np

  from ardm_jax import sample

  _enable_compile_cache(args.workdir)
  model = _open_model(args)
  spec = model.spec
  if not os.path.isfile(args.input):
    raise ValueError(f"input file {args.input} does not exist")
  if spec.kind == "image":
    item = sample.read_image_input(spec, args.input)
    observed = sample.read_mask(spec, args.mask)
  else:
    if args.mask is not None:
      raise ValueError("--mask is for images; mark unknown characters of a text input with '_'")
    item, observed = sample.read_text_input(spec, args.input)
  out = args.out or sample.completion_path(args.input, spec)
  sample.check_writable(out, args.overwrite)
  with model.setup.context():
    completed = sample.complete(
      model, item, observed, args.num, args.budget, args.naive, args.policy, args.seed, split=args.budget_split
    )
  if not np.array_equal(completed[:, observed], np.broadcast_to(item[observed], (args.num, int(observed.sum())))):
    raise AssertionError("internal error: a completion changed a given value")
  sample.write_items(spec, completed, out, overwrite=args.overwrite, scale=4 if spec.shape[0] <= 16 else 1)
  print(
    f"wrote {args.num} completions of {args.input} ({int(observed.sum())} of {spec.num_steps} values given) to {out}"
  )


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  if args.command not in ("train", "preflight") and rest:
    parser.error(f"unrecognized arguments: {' '.join(rest)}")
  try:
    if args.command == "train":
      cmd_train(args, rest)
    elif args.command == "preflight":
      from ardm_jax import preflight  # pylint: disable=import-outside-toplevel

      return preflight.cmd_preflight(args, rest)
    else:
      from ardm_jax import compress, model_dir  # pylint: disable=import-outside-toplevel

      if args.command in ("compress", "decompress"):
        _enable_compile_cache(args.workdir)
      {
        "eval": cmd_eval,
        "sample": cmd_sample,
        "inpaint": cmd_inpaint,
        "policy": cmd_policy,
        "compress": compress.cmd_compress,
        "decompress": compress.cmd_decompress,
        "export": model_dir.cmd_export,
      }[args.command](args)
  except (ValueError, FileExistsError, FileNotFoundError) as err:
    parser.exit(2, f"ardm {args.command}: error: {err}\n")
  except FloatingPointError as err:
    parser.exit(3, f"ardm {args.command}: stopped: {err}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
