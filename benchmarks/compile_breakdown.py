"""Where one libtpu compile of a train step spends its time: libtpu's stages, HLO passes and backend kernels.

    flock /tmp/heavy.lock env PYTHONPATH=DIR_WITH_LIBTPU python benchmarks/compile_breakdown.py \\
        experiments/text8.py@v5e-16 --variant new

Compiles the train step of the variant (`old` / `new` as in benchmarks/compile_and_step.py) once, in a child
process with libtpu's own logging on (TPU_MIN_LOG_LEVEL=0, --vmodule for the pass pipeline and the backend) and
an HLO dump, then prints from that log:
  * libtpu's stages: HLO_PASSES (the XLA pass pipeline, SPMD partitioning included), BACKEND_PASSES (lowering every
    kernel to LLO, optimising, scheduling and register-allocating it), CODE_GENERATION, and the program's size in
    bundles;
  * the HLO passes that took longest (summed over their runs);
  * the backend's kernel count and LLO instructions in all (deterministic, unlike the seconds);
  * backend time per kernel (thread time between one kernel's "LLO optimizing" line and that thread's next line;
    the backend runs kernels on a thread pool, so these add up to more than the stage's wall time), and grouped by
    the part of the train step the kernel's op_name points to: the scanned layer bodies (forward, backward), the
    rest of the network, the loss, the optimizer and EMA.
Nothing here is a TPU measurement of run time; it explains compile time only. Logging slows the compile a little.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

_TS = re.compile(r"^[IWE]\d{4} (\d\d):(\d\d):(\d\d\.\d+)\s+(\d+) ")
_KERNEL = re.compile(r"\] \[([^\]]+)\] LLO optimizing ([\d,]+) instructions")
_PASS = re.compile(r"HLO pass: (\S+) time: ([\d.]+) (us|ms|s|min) ")
_STAGE = re.compile(r"(HLO_PASSES|BACKEND_PASSES|CODE_GENERATION|END_TO_END) stage duration: ([\d.hms]+)")
_BUNDLES = re.compile(r"final program bundle count: ([\d,]+)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def _seconds(text: str) -> float:
  """libtpu's '1m4.58s' / '23.08s' durations in seconds."""
  m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?([\d.]+)s", text)
  return 3600 * int(m.group(1) or 0) + 60 * int(m.group(2) or 0) + float(m.group(3)) if m else float("nan")


def _child(path: str, topology: str, variant: str) -> None:
  import compile_and_step as cs  # pylint: disable=import-outside-toplevel

  from ardm_jax import device_env  # pylint: disable=import-outside-toplevel

  have_libtpu = device_env.prepare_compiler(topology, False)
  if not have_libtpu:
    raise SystemExit("compile_breakdown.py needs libtpu importable (PYTHONPATH)")
  from ardm_jax import configs  # pylint: disable=import-outside-toplevel

  base = configs.load_config_file(path)
  model = cs.variant_model(base.model, variant, True, path)
  lower_s, compile_s, peak = cs.aot_compile(cs.with_model(base, model), topology, True)
  print(
    f"CHILD {cs.describe(model)} | trace+lower {lower_s:.1f} s | compile {compile_s:.1f} s | "
    f"peak {peak / 2**30:.2f} GiB",
    file=sys.stderr,
    flush=True,
  )


def _group(op_name: str) -> str:
  op = op_name.replace("jit(train_step)/", "")
  if "/while/" in op:
    return "scanned layers, backward" if op.startswith("transpose(") else "scanned layers, forward"
  if re.match(r"transpose\(jvp\((Transformer|UNet|DiffWave)\)\)", op):
    return "network outside the scan, backward"
  if re.match(r"jvp\((Transformer|UNet|DiffWave)\)", op):
    return "network outside the scan, forward"
  if not op:
    return "no op_name (collectives, copies, program glue)"
  if "_shuffle" in op or "threefry" in op or "_uniform" in op:
    return "random orders and steps"
  if "log_softmax" in op or "take_along_axis" in op or op.startswith(("jvp()", "transpose(jvp())")):
    return "loss"
  return "optimizer, EMA, L_t tracker, metrics"


def _report(log: str, dump_dir: str, top: int) -> None:
  lines = open(log, errors="replace").read().splitlines()
  for line in lines:
    if line.startswith("CHILD "):
      print(line[len("CHILD ") :])
  stages = {m.group(1): _seconds(m.group(2)) for m in map(_STAGE.search, lines) if m}
  bundles = [m.group(1) for m in map(_BUNDLES.search, lines) if m]
  print("\n| libtpu stage | seconds |\n|---|---|")
  for name in ("HLO_PASSES", "BACKEND_PASSES", "CODE_GENERATION", "END_TO_END"):
    print(f"| {name} | {stages.get(name, float('nan')):.1f} |")
  print(f"final program: {bundles[-1] if bundles else '?'} bundles")

  passes, runs = collections.Counter(), collections.Counter()
  for m in map(_PASS.search, lines):
    if m:
      passes[m.group(1)] += float(m.group(2)) * _UNIT[m.group(3)]
      runs[m.group(1)] += 1
  print(f"\nHLO passes: {sum(passes.values()):.1f} s in all; the longest:\n| pass | runs | seconds |\n|---|---|---|")
  for name, sec in passes.most_common(8):
    print(f"| {name} | {runs[name]} | {sec:.2f} |")

  after = sorted(glob.glob(os.path.join(dump_dir, "*train_step*after_optimizations.txt")))
  names = {}
  if after:
    for m in re.finditer(
      r"^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{op_name=\"([^\"]*)\"", open(after[-1]).read(), re.M
    ):
      names[m.group(1)] = m.group(2)
  current, last_t, kernel_s, size = {}, {}, collections.Counter(), {}
  for line in lines:
    m = _TS.match(line)
    if not m:
      continue
    t = 3600 * int(m.group(1)) + 60 * int(m.group(2)) + float(m.group(3))
    tid = m.group(4)
    if tid in current:
      kernel_s[current[tid]] += t - last_t[tid]
    last_t[tid] = t
    k = _KERNEL.search(line)
    if k:
      current[tid] = k.group(1)
      size[k.group(1)] = int(k.group(2).replace(",", ""))
  total = sum(kernel_s.values())
  # The instruction count is deterministic where thread seconds swing 10-20% run to run on a shared machine, so it
  # is the figure to compare two programs' backend work by.
  print(f"\nBackend work: {len(size)} kernels, {sum(size.values()):,} LLO instructions in all")
  groups = collections.Counter()
  for kernel, sec in kernel_s.items():
    groups[_group(names.get(kernel, ""))] += sec
  print(
    f"\nBackend thread time: {total:.1f} s over {len(kernel_s)} kernels (thread pool, so more than the stage's "
    "wall time)\n| part of the train step | thread seconds | share |\n|---|---|---|"
  )
  for name, sec in groups.most_common():
    print(f"| {name} | {sec:.1f} | {100 * sec / max(total, 1e-9):.0f}% |")
  print("\n| kernel | LLO instructions | thread seconds | op_name |\n|---|---|---|---|")
  for kernel, sec in kernel_s.most_common(top):
    print(f"| {kernel} | {size.get(kernel, 0):,} | {sec:.2f} | {names.get(kernel, '')[:100]} |")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("target", help="CONFIG[:variant]@TOPOLOGY, e.g. experiments/text8.py@v5e-16")
  parser.add_argument("--variant", default="new", choices=["old", "new"])
  parser.add_argument("--top", type=int, default=12, help="kernels listed by backend time")
  parser.add_argument("--keep", default=None, help="a folder to keep the libtpu log and HLO dump in")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  path, topology = args.target.rsplit("@", 1)
  if args.child:
    _child(path, topology, args.variant)
    return 0
  work = args.keep or tempfile.mkdtemp(prefix="compile_breakdown_")
  os.makedirs(work, exist_ok=True)
  dump, log = os.path.join(work, "hlo"), os.path.join(work, "libtpu.log")
  env = dict(
    os.environ,
    TPU_STDERR_LOG_LEVEL="0",
    TPU_MIN_LOG_LEVEL="0",
    LIBTPU_INIT_ARGS=(
      os.environ.get("LIBTPU_INIT_ARGS", "") + " --vmodule=hlo_pass_pipeline=2,deepsea_compiler_backend=1"
    ).strip(),
    XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} --xla_dump_hlo_as_text").strip(),
  )
  with open(log, "w") as f:
    rc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), args.target, "--variant", args.variant, "--child"],
      env=env,
      stdout=f,
      stderr=subprocess.STDOUT,
      check=False,
    ).returncode
  if rc:
    print(f"the compile failed (exit {rc}); see {log}")
    return rc
  print(f"{args.target}, variant {args.variant} (log and HLO dump in {work})")
  _report(log, dump, args.top)
  return 0


if __name__ == "__main__":
  sys.exit(main())
