"""Learning check at CPU size: the paper configs' networks, narrowed, learn on real data within 1,000 steps.

  python -P benchmarks/learning_check.py            # both data sets, both variants: 4 runs of 6-9 min each here
  python -P benchmarks/learning_check.py --data text --variant before
  # the same with an override for one data set, in its own root, then shown beside the others:
  python -P benchmarks/learning_check.py --data text --variant paper --root runs/learning_check_rope \
      --config.model.rope=True
  python -P benchmarks/learning_check.py --compare "paper + rope=runs/learning_check_rope"

Text: the Transformer of experiments/text8.py (its position scheme and inputs, crops of 250 on the text8
alphabet) with fewer layers, a smaller width, a smaller batch and float32, trained on Tiny Shakespeare reduced to
the text8 alphabet (../shared/data/tiny_shakespeare/input_text8norm.txt, read by the text8 source itself: split
90/5/5 contiguously). Images: the U-Net of experiments/cifar10.py (its input layer) narrowed the same way, trained
on the 4,000 + 500 real CIFAR-10 images of ../shared/data/cifar10_subset (the data section of
experiments/cifar10_subset.py, so without cifar10.py's augmentation). The learning rate and warm-up are the only
optimiser settings changed (see NARROW); everything else is the paper config's.

Two variants, equal in everything else:
  paper   the configs as they are (Transformer with the official sinusoidal positions and inputs, U-Net with
          the official numeric input branch);
  before  the earlier networks: Transformer with learned positions, time and mask inputs, no rotary
          positions; U-Net without the numeric branch.

Held-out curve: every CHECKPOINT_EVERY steps a checkpoint is kept; after training each one's EMA parameters are
evaluated (as `ardm eval` does: the stochastic ARDM bound, one random step and order per item and pass) on a
fixed subset of held-out items (text: the validation chunks; images: the first test images), with the same items
and seed for every checkpoint and both variants, so the columns are paired by item. (The trainer's own
train.eval_every gives the same kind of number but only its mean and standard error, so it is off here.) Steps/s
is the training wall time over the steps (including compilation and checkpoint writes).

Workdirs live under ROOT/{text,cifar}_{variant}; finished runs are reused and unfinished ones resumed, and
finished measurements are kept in ROOT/measurements.json (delete an entry, or use a new ROOT, to measure again).
Prints one table per data set and writes benchmarks/learning_check.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ardm_jax import checkpoint, configs, data, held_out, nets, train, workdir  # noqa: E402

VARIANTS = ("before", "paper")
DATASETS = ("text", "cifar")
CHECKPOINT_EVERY = 100
# The network options the paper configs turn on (the official input layers), at their earlier values.
BEFORE = {
  "text": dict(positions="learned", time_input=True, mask_input=True, rope=False),
  "cifar": dict(input_numeric=False),
}
# The option whose presence marks a paper config as having the official input layers.
PAPER_MARKER = {"text": "positions", "cifar": "input_numeric"}

# Narrowing to 2 shared CPU cores, sized so that one run takes under about 8 minutes there (measured: the text model
# 2.2 steps/s; the U-Net at batch 16 only 0.7 steps/s with the cores shared, 23 minutes, so batch 8). Learning rate
# and warm-up are adapted to a 1,000-step run: text8.py warms up over 5,000 steps, longer than the whole run, and
# cifar10.py's 1e-4 (for 1.2M steps) barely moves a small U-Net in 1,000.
NARROW = {
  "text": dict(
    model=dict(num_layers=2, emb_dim=128, mlp_dim=512, num_heads=4, dtype="float32"),
    optim=dict(learning_rate=1e-3, warmup_steps=100),
    batch_size=16,
  ),
  # input_embed_dim ch / 4, the rule cifar10.py follows (64 at ch 256).
  "cifar": dict(
    model=dict(ch=32, num_res_blocks=1, input_embed_dim=8, attention=False, dtype="float32", remat=False),
    optim=dict(learning_rate=1e-3, warmup_steps=100),
    batch_size=8,
  ),
}
# Held-out subsets: all 190 validation chunks of 250 characters; the first 200 of the 500 test images.
EVAL = {
  "text": dict(split="validation", items=190, passes=1, batch_size=95),
  "cifar": dict(split="test", items=200, passes=1, batch_size=50),
}
UNITS = {"text": "bits/char", "cifar": "bits/dim"}
TITLES = {
  "text": "Tiny Shakespeare (text8 alphabet, crops of 250): text8 Transformer narrowed",
  "cifar": "CIFAR-10 subset (4,000 train / 500 test images): cifar10 U-Net narrowed",
}


def build_config(name: str, variant: str, steps: int, text_path: str, cifar_path: str, overrides=()):
  """The paper config narrowed to CPU size, in the given variant, then `overrides` (['--config.k=v', ...])."""
  narrow = NARROW[name]
  if name == "text":
    config = configs.experiment_config(os.path.join(REPO, "experiments", "text8.py"))
    config.data.path = text_path  # the text8 source reads any file on the text8 alphabet
  else:
    config = configs.experiment_config(os.path.join(REPO, "experiments", "cifar10.py"))
    # The CIFAR-10 subset is an .npz, not tfds: the data section of the config made for it.
    config.data = configs.experiment_config(os.path.join(REPO, "experiments", "cifar10_subset.py")).data
    config.data.path = cifar_path
  paper_key = PAPER_MARKER[name]
  if paper_key not in config.model:
    if variant == "paper":
      raise SystemExit(
        f"experiments/{'text8' if name == 'text' else 'cifar10'}.py does not set "
        f"model.{paper_key}: the paper variant needs the official input layers"
      )
  if variant == "before":
    config.model.update(BEFORE[name])
  config.model.update(narrow["model"])
  config.optim.update(narrow["optim"])
  config.train.update(
    batch_size=narrow["batch_size"],
    num_steps=steps,
    checkpoint_every=CHECKPOINT_EVERY,
    keep_checkpoints=steps // CHECKPOINT_EVERY + 1,
    log_every=CHECKPOINT_EVERY,
    eval_passes=0,
    eval_every=0,
  )  # held-out curve: from the kept checkpoints, see above
  # An override may name a network option the paper config leaves at its default (e.g. model.rope).
  network_defaults = nets._SPECS[config.model.name]["optional"]  # pylint: disable=protected-access
  for override in overrides:
    group, _, option = override[len(configs.CONFIG_PREFIX) :].partition("=")[0].partition(".")
    if group == "model" and option not in config.model and option in network_defaults:
      config.model[option] = network_defaults[option]
  config.lock()
  return configs.apply_overrides(config, overrides)


def _git_commit() -> str:
  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

  dirty = git("status", "--porcelain", "--untracked-files=no", "--", "ardm_jax", "experiments")
  return git("rev-parse", "--short", "HEAD") + ("+uncommitted" if dirty else "")


def _finished(path: str, steps: int) -> bool:
  return os.path.isfile(os.path.join(path, train.CONFIG_FILE)) and (checkpoint.latest_step(path) or 0) >= steps


def held_out_curve(path: str, steps: list[int], eval_cfg: dict, seed: int = 0) -> list[dict]:
  """EMA bits/dim ± standard error of each checkpoint on the same held-out items, passes and seed."""
  model = workdir.open_workdir(path, step=steps[0])
  setup = model.setup
  items = data.load(setup.config.data).eval_items(eval_cfg["split"])[: eval_cfg["items"]]
  eval_fn = held_out.make_eval_fn(setup)  # one compilation for every checkpoint
  manager = checkpoint.make_manager(path, async_save=False)
  curve = []
  try:
    for step in steps:
      state, _ = checkpoint.restore(manager, step, setup.abstract_state, setup.state_shardings)
      with setup.context():
        result = held_out.evaluate_params(
          setup,
          state.ema_params,
          items,
          passes=eval_cfg["passes"],
          batch_size=eval_cfg["batch_size"],
          seed=seed,
          eval_fn=eval_fn,
        )
      curve.append(
        {
          "step": step,
          "bpd": result["bpd"],
          "stderr": result["stderr"],
          "per_item": [float(v) for v in result["per_item"]],
        }
      )
      print(f"  {os.path.basename(path)} step {step}: {result['bpd']:.3f} ± {result['stderr']:.3f}", flush=True)
  finally:
    manager.close()
  return curve


def measure(name: str, variant: str, args) -> dict:
  config = build_config(name, variant, args.steps, args.text_data, args.cifar_data, args.overrides)
  path = os.path.join(args.root, f"{name}_{variant}")
  train_seconds = None
  if not _finished(path, args.steps):
    print(f"training {path} ({args.steps} steps)", flush=True)
    start = time.time()
    if train.train_and_evaluate(config, path)["preempted"]:
      sys.exit(f"stopped by SIGTERM during {path}; rerun the same command to continue")
    train_seconds = time.time() - start
  eval_start = time.time()
  steps = list(range(CHECKPOINT_EVERY, args.steps + 1, CHECKPOINT_EVERY))
  curve = held_out_curve(path, steps, EVAL[name])
  return {
    "curve": curve,
    "train_seconds": train_seconds,
    "steps_per_s": args.steps / train_seconds if train_seconds else None,
    "eval_seconds": round(time.time() - eval_start, 1),
    "commit": _git_commit(),
    "date": datetime.date.today().isoformat(),
    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    "model": {k: config.model[k] for k in sorted(config.model.keys())},
    "optim": {k: config.optim[k] for k in sorted(config.optim.keys())},
    "batch_size": int(config.train.batch_size),
    "seq_len": config.data.get("seq_len"),
    "eval": EVAL[name],
  }


def _load(path: str) -> dict:
  return json.load(open(path)) if os.path.isfile(path) else {}


def _save(path: str, values: dict) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(values, f, indent=1)
  os.replace(path + ".tmp", path)


def _cell(point: dict | None) -> str:
  return f"{point['bpd']:.3f} ± {point['stderr']:.3f}" if point else "—"


def compared_runs(name: str, compare: dict[str, dict]) -> dict[str, dict]:
  """{label: run} of this data set from other roots (--compare LABEL=ROOT): their paper (and before) runs."""
  out = {}
  for label, measured in compare.items():
    for variant in VARIANTS:
      run = measured.get(f"{name}_{variant}")
      if run:
        out[label if variant == "paper" else f"{label} (before)"] = run
  return out


def table(name: str, measured: dict, extra: dict[str, dict] | None = None) -> str:
  """Markdown: step, before, paper, paired difference (same items, seed and passes in both), then `extra` runs."""
  extra = extra or {}
  runs = {v: measured.get(f"{name}_{v}") for v in VARIANTS}
  by_step = {v: {p["step"]: p for p in r["curve"]} for v, r in (runs | extra).items() if r}
  steps = sorted(set().union(*[set(s) for s in by_step.values()])) if by_step else []
  unit = UNITS[name]
  lines = [
    f"{TITLES[name]}; held-out {unit}, EMA parameters, mean ± standard error over items",
    "",
    f"| step | before ({unit}) | paper scheme ({unit}) | paper − before (paired) |"
    + "".join(f" {label} |" for label in extra),
    "|---:|---:|---:|---:|" + "---:|" * len(extra),
  ]
  for step in steps:
    a, b = (by_step.get(v, {}).get(step) for v in VARIANTS)
    diff = "—"
    if a and b:
      d = np.asarray(b["per_item"]) - np.asarray(a["per_item"])
      diff = f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(d.size):.3f}"
    lines.append(
      f"| {step} | {_cell(a)} | {_cell(b)} | {diff} |"
      + "".join(f" {_cell(by_step.get(label, {}).get(step))} |" for label in extra)
    )
  rates = [f"{r['steps_per_s']:.2f}" if r and r.get("steps_per_s") else "—" for r in (runs | extra).values()]
  lines.append(f"| steps/s | {rates[0]} | {rates[1]} | |" + "".join(f" {r} |" for r in rates[2:]))
  differences = config_differences(name, runs["before"], runs["paper"]) if all(runs.values()) else []
  if differences:
    lines += ["", "Not comparable: the variants differ beyond the network change in " + ", ".join(differences)]
  return "\n".join(lines)


def config_differences(name: str, before: dict, paper: dict) -> list[str]:
  """Settings of the two runs that differ other than the network options the variants are about."""
  out = []
  for group in ("model", "optim"):
    for key in sorted(set(before[group]) | set(paper[group])):
      if group == "model" and key in BEFORE[name]:
        continue
      if before[group].get(key) != paper[group].get(key):
        out.append(f"{group}.{key} ({before[group].get(key)!r} vs {paper[group].get(key)!r})")
  out += [key for key in ("batch_size", "seq_len", "eval") if before[key] != paper[key]]
  return out


def plot(measured: dict, path: str, compare: dict[str, dict]) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, name in zip(axes, DATASETS):
    for variant, style in zip(VARIANTS, ("o--", "s-")):
      run = measured.get(f"{name}_{variant}")
      if not run:
        continue
      steps = [p["step"] for p in run["curve"]]
      ax.errorbar(
        steps,
        [p["bpd"] for p in run["curve"]],
        yerr=[p["stderr"] for p in run["curve"]],
        fmt=style,
        capsize=3,
        label={"before": "before (learned positions / no numeric input)", "paper": "paper configs (official inputs)"}[
          variant
        ],
      )
    for label, run in compared_runs(name, compare).items():
      ax.errorbar(
        [p["step"] for p in run["curve"]],
        [p["bpd"] for p in run["curve"]],
        yerr=[p["stderr"] for p in run["curve"]],
        fmt="^:",
        capsize=3,
        label=label,
      )
    if name == "text":
      ax.axhline(3.0, color="grey", lw=0.8, ls=":", label="3.0 bits/char")
    ax.set_title(TITLES[name].split(":")[0], fontsize=10)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"held-out {UNITS[name]}")
    if ax.has_data():
      ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"wrote {path}", flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", choices=DATASETS + ("all",), default="all")
  parser.add_argument(
    "--variant",
    choices=VARIANTS + ("both",),
    default="both",
    help="'before': the earlier input layers; 'paper': the configs as they are",
  )
  parser.add_argument(
    "--before", dest="variant", action="store_const", const="before", help="shorthand for --variant before"
  )
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--root", default="runs/learning_check", help="workdir root (reused and resumed)")
  shared = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
  parser.add_argument("--text-data", default=os.path.join(shared, "tiny_shakespeare", "input_text8norm.txt"))
  parser.add_argument("--cifar-data", default=os.path.join(shared, "cifar10_subset", "cifar10_subset.npz"))
  parser.add_argument(
    "--compare",
    action="append",
    default=[],
    metavar="LABEL=ROOT",
    help="add the runs of another root (e.g. one made with overrides) to the tables and the plot",
  )
  parser.add_argument("--plot", default=os.path.join(REPO, "benchmarks", "learning_check.png"))
  args, args.overrides = parser.parse_known_args(argv)
  if args.overrides and (args.data == "all" or not all(o.startswith(configs.CONFIG_PREFIX) for o in args.overrides)):
    parser.error(
      "extra arguments are --config.KEY=VALUE overrides for one data set (--data text or --data cifar), "
      f"applied to both variants; got {args.overrides}"
    )
  if args.steps < CHECKPOINT_EVERY or args.steps % CHECKPOINT_EVERY:
    parser.error(f"--steps must be a positive multiple of {CHECKPOINT_EVERY}")
  os.makedirs(args.root, exist_ok=True)
  store_path = os.path.join(args.root, "measurements.json")
  names = DATASETS if args.data == "all" else (args.data,)
  variants = VARIANTS if args.variant == "both" else (args.variant,)
  for name in names:
    for variant in variants:
      key = f"{name}_{variant}"
      if key not in _load(store_path):
        result = measure(name, variant, args)
        _save(store_path, _load(store_path) | {key: result})  # reread: another variant may have run meanwhile
  measured = _load(store_path)
  compare = {}
  for item in args.compare:
    label, _, root = item.partition("=")
    if not root or not os.path.isfile(os.path.join(root, "measurements.json")):
      parser.error(f"--compare {item!r}: expected LABEL=ROOT where ROOT holds a measurements.json of this script")
    compare[label] = _load(os.path.join(root, "measurements.json"))
  for name in DATASETS:
    print("\n" + table(name, measured, compared_runs(name, compare)) + "\n")
    for variant in VARIANTS:
      run = measured.get(f"{name}_{variant}")
      if run:
        print(
          f"{variant}: commit {run['commit']}, {run['date']}, {run['machine']}; model {run['model']}; "
          f"optim lr {run['optim']['learning_rate']} warm-up {run['optim']['warmup_steps']} "
          f"({run['optim']['schedule']}); batch {run['batch_size']}; eval {run['eval']}"
        )
  print(
    "\nLearning rate and warm-up are adapted to a 1,000-step CPU run (NARROW in this script); everything else "
    "is the paper config's."
  )
  plot(measured, args.plot, compare)


if __name__ == "__main__":
  main()
