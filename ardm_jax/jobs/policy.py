"""`ardm policy`: DP-optimal parallel schedules from per-step losses L_t (ardm_jax/policy.py) -> policy.json + PNG.

L_t comes from a loss file (NumPy only: no model, no JAX), from held-out data with a trained model
(`held_out.estimate_lt`), or from the running estimate saved while training (`--use-tracker`).
"""

from __future__ import annotations

import os

import numpy as np

from ardm_jax import policy_file, policy_plot
from ardm_jax.jobs import options


def add_parser(sub) -> None:
  p = sub.add_parser("policy", description="DP-optimal parallel schedules from L_t -> policy.json + PNG")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--loss-file", help="per-step losses (bits per variable) as .npy or .json; no model needed")
  options.add_model_source(p, group=source, data=True)  # or estimate L_t with a trained model on held-out data
  options.add_step(p)
  p.add_argument("--budgets", required=True, help="comma-separated network-call budgets, e.g. 5,10,20,50")
  options.add_budget_split(
    p,
    "an upscale model's budgets are totals over its stages; the file keeps both splits, this picks the one "
    "printed and plotted: optimal (lowest expected bits, default) or equal (the paper's Table 7)",
  )
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
  p.add_argument(
    "--batch-size", type=int, default=None, help="held-out draws per batch (default train.eval_batch_size)"
  )
  options.add_out(
    p,
    "policy JSON (default WORKDIR/policy.json; required with --model and --loss-file); a PNG is written beside it",
  )
  options.add_overwrite(p)
  p.add_argument("--seed", type=int, default=0)


def parse_budgets(text: str) -> list[int]:
  try:
    budgets = sorted({int(b) for b in text.split(",") if b.strip()})
  except ValueError:
    raise ValueError(f"--budgets must be comma-separated integers, got {text!r}") from None
  if not budgets:
    raise ValueError("--budgets is empty; pass e.g. --budgets 5,10,20")
  return budgets


def run(args) -> None:
  budgets = parse_budgets(args.budgets)
  options.out_required_with_model(args, "the policy file")
  out = args.out or (os.path.join(args.workdir, "policy.json") if args.workdir else None)
  png = None if out is None else os.path.splitext(out)[0] + ".png"
  for path in (out, png):  # before the minutes of estimating L_t
    if path and os.path.exists(path) and not args.overwrite:
      raise FileExistsError(f"{path} exists; pass --overwrite to replace it or choose another --out")
  if args.use_tracker and args.model:
    raise ValueError(
      "--use-tracker needs --workdir: a model folder keeps no training tracker (estimate L_t on held-out data instead)"
    )
  options.resolve_model(args)
  if args.loss_file:
    if args.out is None:
      raise ValueError("--out is required with --loss-file")
    if args.use_tracker:
      raise ValueError("--use-tracker needs --workdir")
    if args.step is not None:
      raise ValueError("--step chooses a workdir's checkpoint; a loss file has none")
    losses, stderr = policy_file.load_loss_file(args.loss_file)
    num_dims, source, fingerprint = args.num_dims or len(losses), f"loss file {args.loss_file}", None
  else:
    # Imported here: the model path imports JAX, Flax and orbax (about 1 s), which `--loss-file` (NumPy only, the
    # 2 s budget of a CIFAR-sized DP) never needs.
    from ardm_jax.jobs import policy_losses  # noqa: PLC0415

    losses, stderr, num_dims, source, fingerprint = policy_losses.model_losses(args)
  write_policies(args, out, png, losses, stderr, num_dims, budgets, fingerprint, source)


def write_policies(args, out, png, losses, stderr, num_dims, budgets, fingerprint, source) -> None:
  """The DP for every budget (per stage, or totals over an upscale model's stages), the file, the plot, a table."""
  num_stages = len(losses) // num_dims if not args.loss_file else 1
  stage_losses = np.reshape(losses, (num_stages, -1))
  stage_stderrs = None if stderr is None else np.reshape(stderr, (num_stages, -1))
  if num_stages == 1:  # budgets are the stage's own
    pf = policy_file.build_policy_file(
      stage_losses, budgets, num_dims, stage_stderrs=stage_stderrs, monotone=args.monotone, fingerprint=fingerprint
    )
    entries = pf["stages"][0]["policies"]
  else:  # budgets are totals over all stages; the file keeps the optimal and the equal split of each
    pf = policy_file.build_policy_file(
      stage_losses,
      [],
      num_dims,
      stage_stderrs=stage_stderrs,
      monotone=args.monotone,
      fingerprint=fingerprint,
      total_budgets=budgets,
    )
    entries = policy_file.total_budget_entries(pf, args.budget_split)
  policy_file.save_policy_file(out, pf, overwrite=args.overwrite)
  dp_bpd = [entries[str(b)]["expected_bpd"] for b in budgets]
  naive_bpd = [entries[str(b)]["naive_expected_bpd"] for b in budgets]
  policy_plot.plot_policy(png, losses, stderr, budgets, dp_bpd, naive_bpd, num_dims)
  how = {"optimal": "optimally", "equal": "equally"}[args.budget_split]
  stages_note = f" in {num_stages} stages (budgets are totals, split {how} over the stages)" if num_stages > 1 else ""
  print(f"L_t from {source}: sum = {np.sum(losses) / num_dims:.4f} bits/dim over {len(losses)} steps{stages_note}")
  print("| budget | DP expected bpd | naive expected bpd |")
  print("|---|---|---|")
  for b, d, n in zip(budgets, dp_bpd, naive_bpd):
    print(f"| {b} | {d:.4f} | {n:.4f} |")
  print(f"wrote {out} and {png}")
