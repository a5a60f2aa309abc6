"""`ardm sample`: unconditional samples of a trained model (ardm_jax/sample.py), written as a PNG grid, text
lines or a folder of WAVs (ardm_jax/file_io.py)."""

from __future__ import annotations

import os
import time

from ardm_jax import file_io, objective, sample
from ardm_jax.jobs import model_source, options


def add_parser(sub) -> None:
  p = sub.add_parser("sample", description="draw samples: PNG grid for images, text file for text, WAVs for audio")
  options.add_model_source(p)
  options.add_step(p)
  p.add_argument("--num", type=int, default=16, help="samples to draw")
  options.add_policy_args(p)
  options.add_out(
    p,
    "output file (default WORKDIR/samples_stepSTEP[_bB].png|txt, or a folder of WAVs for audio; required with --model)",
  )
  options.add_overwrite(p)
  p.add_argument("--seed", type=int, default=0)


def default_out(workdir: str, spec, step: int, budget: int | None, stem: str = "samples") -> str:
  """WORKDIR/STEM_stepSTEP[_bB].png|.txt (a folder for audio), never an existing name."""
  ext = {"image": ".png", "text": ".txt", "audio": ""}[spec.kind]  # audio: a folder of WAVs
  return file_io.unused_path(os.path.join(workdir, f"{stem}_step{step}" + (f"_b{budget}" if budget else "")), ext)


def run(args) -> None:
  model_source.enable_compile_cache(args.workdir)
  options.out_required_with_model(args, "the samples")
  options.resolve_model(args)
  model = model_source.open_model(args)
  out = args.out or default_out(args.workdir, model.spec, model.step, args.budget)
  file_io.check_writable(out, args.overwrite)
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
  file_io.write_items(model.spec, items, out, overwrite=args.overwrite, scale=4 if model.spec.shape[0] <= 16 else 1)
  print(f"wrote {args.num} samples ({calls} network calls, step {model.step}, {time.time() - start:.1f}s) to {out}")
