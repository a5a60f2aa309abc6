"""The options several jobs share, each defined once (argparse only: building a parser imports no JAX).

A job that runs a trained model takes `--workdir W | --model DIR` (`add_model_source`; `--model hf:ORG/NAME` names a
model folder on the hub, which `resolve_model` turns into its local copy at the start of the job) and `--step N|best`
(`add_step`; a model folder holds one step and refuses it); jobs that write a file take `--out` and `--overwrite`;
jobs that run a parallel policy take `--budget`, `--policy`, `--naive` and `--budget-split` (`add_policy_args`).
"""

from __future__ import annotations

import argparse

from ardm_jax import hub  # the standard library only until a hub name is resolved
from ardm_jax.policy import BUDGET_SPLIT_KEYS  # NumPy only: parsing stays cheap


def positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def budget(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"budget must be a positive number of network calls, got {value}")
  return value


def checkpoint_step(text: str) -> int | str:
  if text == "best":
    return text
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"--step must be a step number or 'best', got {text!r}") from None


def add_model_source(p: argparse.ArgumentParser, *, group=None, data: bool = False):
  """--workdir W | --model DIR (exactly one), the trained model a job runs; with `data`, also --data-path.
  `group`: an existing mutually exclusive group to join (policy's, which also holds --loss-file). Jobs that take
  a model source also take --step (`add_step`)."""
  if group is None:
    group = p.add_mutually_exclusive_group(required=True)
  group.add_argument("--workdir", help="a training workdir (its latest checkpoint unless --step)")
  group.add_argument(
    "--model",
    metavar="MODEL",
    help="a model folder written by `ardm export`, or hf:ORG/NAME[@REVISION], one on the Hugging Face hub "
    "(downloaded into the hub cache, opened offline once there; needs the `hub` extra)",
  )
  if data:
    p.add_argument(
      "--data-path",
      default=None,
      help="with --model: the data set's file or folder (a model folder does not record where the data "
      "lies); not needed for embedded data such as digits",
    )
  return group


def add_step(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--step",
    type=checkpoint_step,
    default=None,
    help="a workdir's checkpoint: a step number or 'best' (lowest held-out bits/dim while training; default latest)",
  )


def add_out(p: argparse.ArgumentParser, help_text: str, *, required: bool = False, short: bool = False) -> None:
  names = ("-o", "--out") if short else ("--out",)
  p.add_argument(*names, required=required, default=None, help=help_text)


def add_overwrite(p: argparse.ArgumentParser, help_text: str = "replace an existing output") -> None:
  p.add_argument("--overwrite", action="store_true", help=help_text)


def add_budget_split(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
  # Not --split: eval and policy already take --split for the held-out data split.
  p.add_argument(
    "--budget-split",
    choices=tuple(BUDGET_SPLIT_KEYS),
    default="optimal",
    help=help_text
    or "how an upscale model's total budget is divided over its stages for the DP policy: optimal "
    "(lowest expected bits, default) or equal (the paper's Table 7); --naive always splits "
    "equally; a one-stage model ignores it",
  )


def add_policy_args(
  p: argparse.ArgumentParser,
  *,
  budget_help: str = "network calls under a parallel policy (default: one call per variable)",
  policy_help: str = "policy file (default WORKDIR/policy.json)",
  split_help: str | None = None,
) -> None:
  """--budget B, --policy FILE, --naive and --budget-split: the parallel policy a job runs."""
  p.add_argument("--budget", type=budget, default=None, help=budget_help)
  p.add_argument("--policy", default=None, help=policy_help)
  p.add_argument("--naive", action="store_true", help="evenly spaced steps instead of the DP policy")
  add_budget_split(p, split_help)


def out_required_with_model(args, what: str) -> None:
  """Refuses --model without --out where the default output would go into the model folder."""
  if args.model is not None and args.out is None:
    raise ValueError(f"--out is required with --model: where to write {what} (nothing is written into a model folder)")


def resolve_model(args) -> None:
  """--model hf:ORG/NAME[@REVISION] as the local folder of its copy in the hub cache (ardm_jax/hub.py), downloaded
  here once, before the job reads anything of the model. An --out inside that copy is refused. A local --model (or
  --workdir) is left as it is."""
  if not hub.is_hub_name(getattr(args, "model", None)):
    return
  folder = hub.local_folder(args.model)
  hub.refuse_writes_into(folder, getattr(args, "out", None), args.model)
  args.model = folder
