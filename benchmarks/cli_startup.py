"""Start-up cost of the `ardm` commands: wall time of whole commands in fresh processes, and what they import.

Every command is run `--runs` times as `python -m ardm_jax.cli ...` (no console-script or pyenv-shim overhead) and
the median wall time is printed in a Markdown table, with the heavy packages the same command imports (checked in
one more process). Rows:

  - `ardm --help` and `ardm eval --help` (argument parsing only);
  - `ardm policy --loss-file F --budgets 1,2,...,500` on a synthetic L_t of D = 3,072 steps (a CIFAR-10-sized
    OA-ARDM; NumPy only: the DP for all 500 budgets, policy.json and the PNG), and the same with 7 budgets;
  - importing the modules `ardm compress` uses (`import ardm_jax.compress` and what its job imports);
  - with `--workdir W` (a trained workdir): `ardm eval --workdir W` without the compilation cache, then twice
    with a fresh cache folder (cold: compiles and writes; warm: loads the programs), on a copy of W; and
    `ardm compress` / `ardm decompress` of the first held-out item of W's data (one image for the digits default),
    once cold, then `--runs` times warm (median, with the cache the cold run filled).

Command:
  python benchmarks/cli_startup.py [--runs 5] [--workdir runs/digits]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("jax", "flax", "optax", "orbax", "tensorflow", "clu", "sklearn", "matplotlib", "scipy")
COMPRESS_IMPORTS = (
  "ardm_jax.compress",
  "ardm_jax.workdir",
  "ardm_jax.sample",
  "ardm_jax.upscale",
  "ardm_jax.sharding",
  "ardm_jax.data",
  "ardm_jax.compile_cache",
)


def _timed(cmd: list[str], env: dict, cwd: str) -> tuple[float, float]:
  """(wall seconds, CPU seconds user + system) of one run of `cmd` in a fresh process."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
  elapsed = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
  return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _row(name: str, runs: list[tuple[float, float]], mods: str) -> tuple:
  return (
    name,
    statistics.median(r[0] for r in runs),
    min(r[0] for r in runs),
    statistics.median(r[1] for r in runs),
    mods,
  )


def _imports_of(code: str, env: dict, cwd: str) -> str:
  probe = (
    f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
  )
  proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=cwd, capture_output=True, text=True)
  if proc.returncode != 0:
    return "?"
  return ", ".join(json.loads(proc.stdout.strip().splitlines()[-1])) or "-"


def _cli_code(argv: list[str]) -> str:
  return f"import sys\nfrom ardm_jax import cli\ntry:\n  cli.main({argv!r})\nexcept SystemExit:\n  pass"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
  parser.add_argument("--workdir", default=None, help="a trained workdir: also time ardm eval with the cache")
  parser.add_argument("--num-steps", type=int, default=3072, help="D of the synthetic loss file")
  parser.add_argument("--max-budget", type=int, default=500)
  args = parser.parse_args()

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  tmp = tempfile.mkdtemp(prefix="ardm_cli_startup_")
  import numpy as np  # pylint: disable=import-outside-toplevel

  t = np.arange(args.num_steps)
  rng = np.random.default_rng(0)
  losses = 0.5 + 3.0 * np.exp(-t / (args.num_steps / 6)) + 0.02 * rng.standard_normal(args.num_steps)
  np.save(os.path.join(tmp, "lt.npy"), np.abs(losses))
  cli = [sys.executable, "-m", "ardm_jax.cli"]
  all_budgets = ",".join(str(b) for b in range(1, args.max_budget + 1))
  few_budgets = "5,10,20,50,100,200,500"
  rows = [
    ("ardm --help", ["--help"]),
    ("ardm eval --help", ["eval", "--help"]),
    (
      f"ardm policy --loss-file (D={args.num_steps:,}) --budgets 1..{args.max_budget}",
      ["policy", "--loss-file", "lt.npy", "--budgets", all_budgets, "--out", "p_all.json", "--overwrite"],
    ),
    (
      f"ardm policy --loss-file (D={args.num_steps:,}) --budgets {few_budgets}",
      ["policy", "--loss-file", "lt.npy", "--budgets", few_budgets, "--out", "p_few.json", "--overwrite"],
    ),
  ]
  table = []
  for name, argv in rows:
    runs = [_timed(cli + argv, env, tmp) for _ in range(args.runs)]
    table.append(_row(name, runs, _imports_of(_cli_code(argv), env, tmp)))
  code = "\n".join(f"import {m}" for m in COMPRESS_IMPORTS)
  runs = [_timed([sys.executable, "-c", code], env, tmp) for _ in range(args.runs)]
  table.append(_row("import the modules of ardm compress", runs, _imports_of(code, env, tmp)))
  runs = [_timed([sys.executable, "-c", "pass"], env, tmp) for _ in range(args.runs)]
  table.append(_row("python -c pass (interpreter alone)", runs, "-"))

  # On a shared machine the wall time includes waiting for a core; the CPU time is what the command itself costs
  # (all of it single-threaded work for the NumPy-only rows).
  print(f"{args.runs} runs each, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start")
  print("| command | median wall s | min wall s | median CPU s | heavy packages imported |")
  print("|---|---|---|---|---|")
  for name, med, best, cpu, mods in table:
    print(f"| {name} | {med:.2f} | {best:.2f} | {cpu:.2f} | {mods} |")
  # What the compress modules spend their import time on (cumulative microseconds of the top-level packages).
  proc = subprocess.run(
    [sys.executable, "-X", "importtime", "-c", code], env=env, cwd=tmp, capture_output=True, text=True
  )
  top = {}
  for line in proc.stderr.splitlines():
    parts = line.split("|")
    name = parts[2].strip() if len(parts) == 3 else ""
    if parts[1:] and parts[1].strip().isdigit() and name and "." not in name and name not in top:
      top[name] = int(parts[1])  # a package's first (outermost) import carries its whole cost
  top = [(us, name) for name, us in top.items()]
  print(
    "\nimport time of the compress modules by package (python -X importtime, one run; nested packages are "
    "also counted in the ones that import them):"
  )
  print("| package | cumulative s |")
  print("|---|---|")
  for us, pkg in sorted(top, reverse=True)[:8]:
    print(f"| {pkg} | {us / 1e6:.2f} |")

  if args.workdir:
    workdir = os.path.join(tmp, "workdir")  # a copy: eval writes eval.json into its workdir
    shutil.copytree(args.workdir, workdir)
    cache = os.path.join(tmp, "jax_cache")
    argv = ["eval", "--workdir", workdir, "--passes", "1"]
    print(f"\nardm eval --workdir {args.workdir} (one process each, in this order):")
    runs = [
      ("no cache", dict(env, ARDM_COMPILE_CACHE="")),
      ("cold", dict(env, ARDM_COMPILE_CACHE=cache)),
      ("warm", dict(env, ARDM_COMPILE_CACHE=cache)),
      ("warm", dict(env, ARDM_COMPILE_CACHE=cache)),
    ]
    print("| run | compile cache | wall s | CPU s |")
    print("|---|---|---|---|")
    for i, (what, run_env) in enumerate(runs):
      wall, cpu = _timed(cli + argv, run_env, tmp)
      print(f"| {i + 1} | {what} | {wall:.2f} | {cpu:.2f} |", flush=True)
    print(f"(cache folder: {sum(len(f) for _, _, f in os.walk(cache))} files)")
    _time_compression(cli, workdir, dict(env, ARDM_COMPILE_CACHE=cache), tmp, args.runs)


def _time_compression(cli: list[str], workdir: str, env: dict, tmp: str, runs: int) -> None:
  """Whole `ardm compress` and `ardm decompress` commands on one held-out item (saved as .npy), cold then warm."""
  code = (
    "import numpy as np\nfrom ardm_jax import configs, data\n"
    f"c = configs.config_from_json({os.path.join(workdir, 'config.json')!r})\n"
    f"np.save({os.path.join(tmp, 'item.npy')!r}, data.load(c.data).eval_items('test')[0])"
  )
  subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, check=True, capture_output=True)
  jobs = {
    "compress": ["compress", "--workdir", workdir, "item.npy", "-o", "item.ardm", "--overwrite"],
    "decompress": ["decompress", "--workdir", workdir, "item.ardm", "-o", "restored", "--overwrite"],
  }
  print("\nardm compress / decompress of one held-out item (the compile cache of the eval runs above):")
  print("| command | cold wall s | warm median wall s | warm min wall s | warm median CPU s |")
  print("|---|---|---|---|---|")
  for name, argv in jobs.items():
    cold = _timed(cli + argv, env, tmp)
    warm = [_timed(cli + argv, env, tmp) for _ in range(runs)]
    print(
      f"| ardm {name} | {cold[0]:.2f} | {statistics.median(w[0] for w in warm):.2f} | "
      f"{min(w[0] for w in warm):.2f} | {statistics.median(w[1] for w in warm):.2f} |",
      flush=True,
    )
  size = os.path.getsize(os.path.join(tmp, "item.ardm"))
  print(f"(file: {size} bytes)")


if __name__ == "__main__":
  main()
