"""What a user waits for: wall time of whole `ardm ...` commands, each in a fresh process.

Every command runs once as a warm-up (it fills the compilation cache and the OS file cache), then `--runs` times;
the table gives the median and the minimum wall time of the whole process (interpreter start, imports, the job,
exit) and the median CPU time. Commands are started as `python -m ardm_jax.cli ...` (no console-script or shim
overhead). Rows:

  - `ardm --help` and `ardm eval --help` (argument parsing only);
  - `ardm policy --loss-file F --budgets 1..500` on a synthetic L_t of D = 3,072 steps (a CIFAR-10-sized OA-ARDM:
    the DP for all 500 budgets, policy.json and its PNG);
  - with `--workdir W` (a trained image workdir, e.g. the digits default): `ardm compress` of one held-out image
    saved as PNG, and `ardm decompress` of the container it wrote.

Command (a quick digits workdir: a few minutes on 2 cores):
  ardm train --config experiments/digits.py --workdir /tmp/digits --config.train.num_steps=60
  python benchmarks/cli_startup.py --workdir /tmp/digits [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from ardm_jax import configs, data, file_io


def timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, float]:
  """(wall seconds, CPU seconds user + system) of one run of `cmd` in a fresh process."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
  elapsed = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
  return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_command(cmd: list[str], env: dict, cwd: str, runs: int) -> tuple[float, float, float]:
  """One warm-up run, then `runs` runs: (median wall s, min wall s, median CPU s)."""
  timed(cmd, env, cwd)
  results = [timed(cmd, env, cwd) for _ in range(runs)]
  return (
    statistics.median(r[0] for r in results),
    min(r[0] for r in results),
    statistics.median(r[1] for r in results),
  )


def write_image(workdir: str, path: str) -> None:
  """The first held-out image of the workdir's data as an 8-bit PNG on the model's levels."""
  config = configs.config_from_json(os.path.join(workdir, configs.CONFIG_FILE))
  dataset = data.load(config.data)
  if dataset.kind != "image":
    raise ValueError(f"--workdir must hold an image model, got {dataset.kind}")
  pixels = file_io.to_uint8(dataset.eval_items("test")[0], dataset.num_classes)
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=5, help="timed runs per command after the warm-up (median)")
  parser.add_argument("--workdir", default=None, help="a trained image workdir: also time compress / decompress")
  parser.add_argument("--num-steps", type=int, default=3072, help="D of the synthetic loss file")
  parser.add_argument("--max-budget", type=int, default=500)
  args = parser.parse_args()

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  tmp = tempfile.mkdtemp(prefix="ardm_cli_startup_")
  t = np.arange(args.num_steps)
  losses = 0.5 + 3.0 * np.exp(-t / (args.num_steps / 6)) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
  np.save(os.path.join(tmp, "lt.npy"), np.abs(losses))
  ardm = [sys.executable, "-m", "ardm_jax.cli"]
  budgets = ",".join(str(b) for b in range(1, args.max_budget + 1))
  rows = [
    ("ardm --help", ["--help"]),
    ("ardm eval --help", ["eval", "--help"]),
    (
      f"ardm policy --loss-file (D={args.num_steps:,}) --budgets 1..{args.max_budget}",
      ["policy", "--loss-file", "lt.npy", "--budgets", budgets, "--out", "p.json", "--overwrite"],
    ),
  ]
  if args.workdir:
    workdir = os.path.join(tmp, "workdir")  # a copy: nothing is written into the user's workdir
    shutil.copytree(args.workdir, workdir)
    write_image(workdir, os.path.join(tmp, "one.png"))
    rows += [
      ("ardm compress (one image)", ["compress", "--workdir", workdir, "one.png", "-o", "one.ardm", "--overwrite"]),
      ("ardm decompress (one image)", ["decompress", "--workdir", workdir, "one.ardm", "-o", "out", "--overwrite"]),
    ]
  rows.append(("python -c pass (the interpreter alone)", None))
  print(f"{args.runs} runs after one warm-up each, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}")
  print("| command | median wall s | min wall s | median CPU s |")
  print("|---|---|---|---|")
  for name, argv in rows:
    cmd = [sys.executable, "-c", "pass"] if argv is None else ardm + argv
    med, best, cpu = time_command(cmd, env, tmp, args.runs)
    print(f"| {name} | {med:.2f} | {best:.2f} | {cpu:.2f} |", flush=True)
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
