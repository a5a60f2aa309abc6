"""`ardm inpaint`: completions of a partly given input (an image and its known-mask, text with '_' gaps, or a WAV
and the seconds to regenerate) by a trained model (ardm_jax/sample.py `complete`); the given values are kept exactly."""

from __future__ import annotations

import os

import numpy as np

from ardm_jax import file_io, sample
from ardm_jax.jobs import model_source, options

# How each kind of input marks what to generate (the one-line answer to an option of another kind).
GAP_HELP = {
  "image": "give an image's known pixels with --mask",
  "text": "mark unknown characters of a text input with '_'",
  "audio": "give the seconds of a WAV to regenerate with --gap START:END",
}


def add_parser(sub) -> None:
  p = sub.add_parser(
    "inpaint", description="complete a partly given input (image + mask, text with '_', or a WAV with --gap)"
  )
  options.add_model_source(p)
  options.add_step(p)
  p.add_argument(
    "--input",
    required=True,
    help="image .png/.npy of the model's shape, a .txt with '_' gaps, or a 16-bit mono .wav at the model's rate",
  )
  p.add_argument("--mask", default=None, help="image known-mask .png/.npy (non-zero = given; default top half)")
  p.add_argument(
    "--gap",
    default=None,
    metavar="START:END",
    help="audio: the seconds to regenerate (a clip shorter than the model's length is also continued)",
  )
  p.add_argument("--num", type=int, default=8, help="completions to draw")
  options.add_policy_args(p)
  options.add_out(p, "default: beside the input as NAME.completed.png|txt, or the WAV folder NAME.completed/")
  options.add_overwrite(p)
  p.add_argument("--seed", type=int, default=0)


def run(args) -> None:
  model_source.enable_compile_cache(args.workdir)
  options.resolve_model(args)
  model = model_source.open_model(args)
  spec = model.spec
  if not os.path.isfile(args.input):
    raise ValueError(f"input file {args.input} does not exist")
  if args.mask is not None and spec.kind != "image":
    raise ValueError(f"--mask is for images; {GAP_HELP[spec.kind]}")
  if args.gap is not None and spec.kind != "audio":
    raise ValueError(f"--gap is for audio; {GAP_HELP[spec.kind]}")
  if spec.kind == "image":
    item = file_io.read_image_input(spec, args.input)
    observed = file_io.read_mask(spec, args.mask)
  elif spec.kind == "audio":
    item, observed = file_io.read_audio_input(spec, args.input, args.gap)
  else:
    item, observed = file_io.read_text_input(spec, args.input)
  out = args.out or file_io.completion_path(args.input, spec)
  file_io.check_writable(out, args.overwrite)
  with model.setup.context():
    completed = sample.complete(
      model, item, observed, args.num, args.budget, args.naive, args.policy, args.seed, split=args.budget_split
    )
  if not np.array_equal(completed[:, observed], np.broadcast_to(item[observed], (args.num, int(observed.sum())))):
    raise AssertionError("internal error: a completion changed a given value")
  file_io.write_items(spec, completed, out, overwrite=args.overwrite, scale=4 if spec.shape[0] <= 16 else 1)
  print(
    f"wrote {args.num} completions of {args.input} ({int(observed.sum())} of {spec.num_steps} values given) to {out}"
  )
