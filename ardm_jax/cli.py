"""The `ardm` command: parses the command line and dispatches to one job module (ardm_jax/jobs/).

Each command is a module `ardm_jax.jobs.NAME` with `add_parser(subparsers)` and `run(args)`. `ardm --help` lists
the commands from the table below without importing any job; `ardm CMD ...` imports only that command's module
(the package's one lazy import), which adds its own options, so each command pays only for the libraries it uses:
`ardm policy --loss-file` imports no JAX, and only `ardm train` and the tfds data sources import TensorFlow.

A bad input ends as one line `ardm CMD: error: ...` with exit code 2, never a traceback; a run that diverges
(NaN/Inf) ends with `ardm CMD: stopped: ...` and exit code 3. Nothing imports this module; tests and notebooks call
the jobs and the library directly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# TensorFlow (imported by clu and tfds) is only used for TensorBoard files and data; keep its start-up noise out.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# command -> (module in ardm_jax.jobs, one-line help for `ardm --help`)
COMMANDS = {
  "train": ("train", "train (or resume) a model; overrides as --config.KEY=VALUE"),
  "eval": ("evaluate", "held-out bits/dim with standard error -> WORKDIR/eval_stepN.json"),
  "sample": ("sample", "draw samples: PNG grid for images, text file for text, WAVs for audio"),
  "inpaint": ("inpaint", "complete a partly given input (image + mask, text with '_', or a WAV with --gap)"),
  "policy": ("policy", "DP-optimal parallel schedules from L_t -> policy.json + PNG"),
  "compress": ("compress", "lossless compression of images, text or audio with a trained model"),
  "decompress": ("decompress", "restore the files of an `ardm compress` container"),
  "export": ("export", "a portable model folder that every job takes as --model"),
  "preflight": ("preflight", "check a config before renting hardware (fake CPU devices or a TPU slice compile)"),
}


class OneLineParser(argparse.ArgumentParser):
  """argparse with its own errors (a missing or unknown flag, a bad value) in one line like every other error:
  `ardm CMD: error: ...` and where to look, exit code 2, instead of the usage block."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(command: str | None = None):
  """The `ardm` parser: with `command`, that command's full parser (its job module imported; the job's own
  description is what `ardm CMD --help` shows); without, the list of commands from COMMANDS (nothing imported).
  Returns (parser, the job module or None)."""
  parser = OneLineParser(prog="ardm", description="Autoregressive Diffusion Models in JAX")
  sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
  if command not in COMMANDS:
    for name, (_, help_text) in COMMANDS.items():
      sub.add_parser(name, help=help_text, add_help=False)
    return parser, None
  job = importlib.import_module(f"ardm_jax.jobs.{COMMANDS[command][0]}")
  job.add_parser(sub)
  return parser, job


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser, job = build_parser(argv[0] if argv else None)
  if job is None:  # --help, no command or an unknown one: argparse prints the commands and exits
    parser.parse_args(argv)
    parser.error(f"unknown command {argv[0]!r}")
  args, rest = parser.parse_known_args(argv)
  if rest and not getattr(job, "TAKES_OVERRIDES", False):
    parser.exit(
      2, f"ardm {args.command}: error: unrecognized arguments: {' '.join(rest)}; see `ardm {args.command} --help`\n"
    )
  args.overrides = rest
  try:
    code = job.run(args)
  except (ValueError, FileExistsError, FileNotFoundError) as err:
    parser.exit(2, f"ardm {args.command}: error: {err}\n")
  except FloatingPointError as err:
    parser.exit(3, f"ardm {args.command}: stopped: {err}\n")
  return code or 0


if __name__ == "__main__":
  sys.exit(main())
