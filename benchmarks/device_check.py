"""One call on one accelerator: compile time, step time, examples/s and MFU of the paper configs' train step at the
paper's per-device batch, for the remat and attention choices the configs offer.

    python benchmarks/device_check.py                                   # one GPU: cifar10.py and text8.py
    python benchmarks/device_check.py --configs text8 --variants config,bf16 --steps 20
    python benchmarks/device_check.py --tiny --steps 2 --warmup 1       # CPU smoke run of the :tiny configs

Prints a markdown table for benchmarks/RESULTS.md on stdout, headed by the device kind, the JAX version and the
commit; progress goes to stderr. Each row is one variant of one config:

  config      the config as it stands (experiments/cifar10.py: remat 'attention', attention 'auto', scanned layers,
              bf16; experiments/text8.py: the same in float32);
  remat=X     model.remat X ('none', 'full', 'dots': dots_with_no_batch_dims_saveable; ardm_jax/nets/layers.py);
  attn=X      model.attention_impl X ('plain' einsums, 'xla', 'cudnn'; ardm_jax/nets/attention.py);
  bf16        model.dtype bfloat16 (text8: where 'auto' can pick cuDNN, which takes bf16/fp16 only);
  unscanned   model.scan_layers off (every block compiled on its own: CIFAR-10's libtpu compile took 413 s
              against 91 s scanned, README "Network speed options", so it is not run by default).

The settings column says what ran: remat / attention / layers / dtype, where an 'auto' or 'cudnn' attention is
followed by the kernel found in the compiled program (cuDNN's fused attention or XLA's). A variant that fails (out
of memory, a kernel that does not apply) gets a row that says why, and the others still run.

What is timed: the trainer's own jitted train step (train.compile_train_step, via throughput.time_train_step) on ONE
device (the first local one) with a synthetic batch of the data's shape: the lowering and compile once (the
persistent compile cache is off here, so compiles are cold), then `--warmup` steps, then the median of `--steps`
steps each waited for with jax.block_until_ready.

Per-device batch: the config's train.batch_size over the chips the paper trained it on (the configs' docstrings:
CIFAR-10 about 2 weeks on 8 TPUv4, text8 about a week on 4 TPUv4; paper App. D), so CIFAR-10 128 / 8 = 16 and text8
512 / 4 = 128; on one device that is the whole batch. `--tiny` runs the configs' `:tiny` variants at their own batch
of 4 (it does not divide by the chip counts), which is only a check that the script works.

Model FLOPs per step: model_flops.step_flops, the count the trainer's MFU uses (global, no remat recompute, layer scans
unrolled, plain attention), counted once per config and dtype since the counting program is the same for every remat,
attention and scan choice. Model TFLOP/s = that count / median step time. MFU divides it by the device kind's dense
peak (ardm_jax/device_peaks.py): against the bf16 peak, and against the peak of the variant's dtype (what the trainer
reports; a GPU's float32 peak is its TF32 one); '-' where the kind has no peak (the CPU). The memory column is XLA's
plan for the compiled step (arguments + outputs + temporaries - aliased; progress.compiled_memory).

Budget: variants run round-robin over the configs (each config's own first), and one is skipped (a row says so)
where the time so far plus the slowest variant of its config so far would pass `--budget_s` (default 540 s, so that
a run stays under 10 minutes; imports and FLOP counts count). A config's first variant has no estimate and always
starts while time is left. On SIGTERM (a timeout) the rows measured so far are printed.
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time

START = time.perf_counter()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # throughput.py, also when loaded from elsewhere
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# As launch/gpu/single_node.sh: JAX takes 75% of a GPU up front by default, which the no-remat variants may need.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")

import jax  # noqa: E402
import throughput  # noqa: E402

from ardm_jax import configs, model_flops, progress, train  # noqa: E402
from ardm_jax.nets.layers import remat_choice  # noqa: E402
from ardm_jax.train_state import build_setup, data_spec  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Paper:
  path: str  # the config file, relative to the repository
  chips: int  # the accelerators the paper trained it on (the config's docstring)
  variants: tuple[str, ...]  # what a plain run compares


# Chips: the configs' docstrings (paper App. D). Variants in order of interest, since --budget_s skips the last ones:
# neither config gets cuDNN attention from 'auto' (CIFAR-10's one head is 256 wide, past auto's 128; text8 runs in
# float32), so what cuDNN would give comes first, then the remat choices, then the einsum attention.
PAPER = {
  "cifar10": Paper("experiments/cifar10.py", 8, ("config", "attn=cudnn", "remat=none", "attn=plain", "remat=full")),
  "text8": Paper("experiments/text8.py", 4, ("config", "bf16", "remat=none", "attn=plain")),
}

# Variant name -> model.* values it sets ('config' sets none).
VARIANTS = {
  "config": {},
  "remat=none": {"remat": "none"},
  "remat=full": {"remat": "full"},
  "remat=dots": {"remat": "dots_with_no_batch_dims_saveable"},
  "attn=plain": {"attention_impl": "plain"},
  "attn=xla": {"attention_impl": "xla"},
  "attn=cudnn": {"attention_impl": "cudnn"},
  "bf16": {"dtype": "bfloat16"},
  "unscanned": {"scan_layers": False},
}
GIB = 2.0**30


class InputError(Exception):
  """A bad command line: reported in one line, without a traceback."""


class Stopped(Exception):
  """SIGTERM: print what was measured and stop."""


def log(message: str) -> None:
  print(f"[{time.perf_counter() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Row:
  config: str
  variant: str
  settings: str
  dtype: str
  batch: int
  compile_s: float | None = None
  step_s: float | None = None
  flops: float | None = None
  mfu_bf16: float | None = None
  mfu_dtype: float | None = None
  memory_gib: float | None = None
  note: str = ""

  def cells(self) -> list[str]:
    def num(value, fmt):
      return "-" if value is None else format(value, fmt)

    timed = self.step_s is not None
    return [
      self.config,
      self.variant,
      self.settings,
      str(self.batch),
      num(self.compile_s, ".1f"),
      num(1e3 * self.step_s if timed else None, ".4g"),
      num(self.batch / self.step_s if timed else None, ".4g"),
      num(self.flops / self.step_s / 1e12 if timed else None, ".3g"),
      num(None if self.mfu_bf16 is None else 100 * self.mfu_bf16, ".1f"),
      num(None if self.mfu_dtype is None else 100 * self.mfu_dtype, ".1f"),
      num(self.memory_gib, ".3g"),
      self.note,
    ]


COLUMNS = (
  "config",
  "variant",
  "remat / attention / layers / dtype",
  "per-device batch",
  "compile s",
  "step ms (median)",
  "examples/s",
  "model TFLOP/s",
  "MFU % (bf16 peak)",
  "MFU % (dtype peak)",
  "XLA memory GiB",
  "note",
)


def commit_label() -> str:
  def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout.strip()

  try:
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "ardm_jax", "experiments", "benchmarks")
    return git("rev-parse", "--short", "HEAD") + ("+uncommitted" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout; pass --commit)"


def variant_config(paper: Paper, variant: str, tiny: bool):
  """The config of one variant: the paper config (or its :tiny variant) with the variant's model values."""
  config = configs.load_config_file(os.path.join(REPO, paper.path) + (":tiny" if tiny else ""))
  for key, value in VARIANTS[variant].items():
    if key not in config.model:
      raise InputError(f"variant {variant!r} sets model.{key}, which {paper.path} does not have")
    config.model[key] = value
  # One device: the mesh is 1x1x1 whatever the config's axes say.
  for axis in config.mesh:
    if axis != "zero1":
      config.mesh[axis] = 1
  return config


def per_device_batch(config, paper: Paper, tiny: bool, override: int | None) -> int:
  if override:
    return override
  batch = int(config.train.batch_size)
  if tiny:
    return batch
  if batch % paper.chips:
    raise InputError(f"{paper.path}: train.batch_size {batch} does not divide over the paper's {paper.chips} chips")
  return batch // paper.chips


def settings_of(config, compiled=None) -> str:
  """remat / attention / layers / dtype of a variant; with its compiled step, what an 'auto' or 'cudnn' attention
  became in the program."""
  model = config.model
  attention = model.get("attention_impl", "-")
  if compiled is not None and attention in ("auto", "cudnn"):
    # 'auto' picks cuDNN only on a GPU in bf16/fp16 with a head width it takes (ardm_jax/nets/attention.py).
    attention += ":cudnn" if "__cudnn$fmha" in compiled.as_text() else ":xla"
  layers = "scan" if model.get("scan_layers", False) else "unrolled"
  return f"{remat_choice(model.get('remat'))} / {attention} / {layers} / {dtype_of(config)}"


def dtype_of(config) -> str:
  return config.model.get("dtype", "float32")


def model_key(config) -> str:
  """The model values the FLOP count depends on: all but those the counting program fixes (remat, scans and the
  attention form; model_flops.COUNTING_MODEL_SETTINGS), so variants that differ only in those share one count."""
  kept = {k: str(v) for k, v in config.model.items() if k not in model_flops.COUNTING_MODEL_SETTINGS}
  return json.dumps(kept, sort_keys=True)


def one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  first = text[0] if text else ""
  return f"{type(error).__name__}: {first[:160]}"


def run_variant(row: Row, config, batch: int, flops: float, kind: str, args) -> None:
  """Compiles and times one variant into `row` (its note says why where it could not)."""
  if VARIANTS[row.variant].get("attention_impl") == "cudnn" and jax.default_backend() != "gpu":
    row.note = "skipped: cuDNN attention needs a GPU"
    return
  setup = build_setup(config, data_spec(config), devices=jax.local_devices()[:1])
  timing = throughput.time_train_step(setup, setup.spec, batch, args.steps, args.warmup)
  row.settings = settings_of(config, timing.compiled)
  row.compile_s, row.step_s, row.flops = timing.compile_s, timing.median_s, flops
  achieved = flops / row.step_s
  bf16_peak, _ = progress.peak_note(kind, "bfloat16")
  dtype_peak, _ = progress.peak_note(kind, dtype_of(config))
  row.mfu_bf16 = bf16_peak and achieved / bf16_peak
  row.mfu_dtype = dtype_peak and achieved / dtype_peak
  plan = progress.compiled_memory(timing.compiled)
  row.memory_gib = plan and plan["estimate"] / GIB
  if not all(math.isfinite(v) and v > 0 for v in (row.compile_s, row.step_s, row.flops)):
    row.note = "non-finite or zero measurement"


def plan_runs(args) -> list[tuple[str, str]]:
  """(config name, variant) pairs, round-robin over the configs so each config's first variant runs early."""
  names = [n.strip() for n in args.configs.split(",") if n.strip()]
  for name in names:
    if name not in PAPER:
      raise InputError(f"unknown config {name!r}; choose from {', '.join(PAPER)}")
  if args.variants:
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in chosen:
      if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    per_config = {name: chosen for name in names}
  else:
    per_config = {name: list(PAPER[name].variants) for name in names}
  runs = []
  for i in range(max(len(v) for v in per_config.values())):
    runs += [(name, per_config[name][i]) for name in names if i < len(per_config[name])]
  return runs


def table(rows: list[Row], kind: str, commit: str, args, stopped: bool) -> str:
  lines = [
    f"### {kind}, jax {jax.__version__}, commit {commit} ({datetime.date.today()})",
    "",
    "`" + " ".join(["python benchmarks/device_check.py", *args.argv]) + "`",
    f"one {jax.default_backend()} device; median of {args.steps} steps after {args.warmup} warm-up; model FLOPs: "
    f"{model_flops.METHOD}" + ("; STOPPED by SIGTERM before the end" if stopped else ""),
    "",
    "| " + " | ".join(COLUMNS) + " |",
    "|" + "---|" * len(COLUMNS),
  ]
  lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
  dtypes = sorted({row.dtype for row in rows} | {"bfloat16"})
  lines += [""] + list(dict.fromkeys(progress.peak_note(kind, dtype)[1] for dtype in dtypes))
  return "\n".join(lines)


class Parser(argparse.ArgumentParser):
  def error(self, message):
    raise InputError(message)


def parse(argv: list[str]):
  ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--configs", default=",".join(PAPER), help=f"comma-separated, of: {', '.join(PAPER)}")
  ap.add_argument("--variants", default=None, help=f"comma-separated, of: {', '.join(VARIANTS)} (default: per config)")
  ap.add_argument("--tiny", action="store_true", help="the configs' :tiny variants at their own batch (CPU check)")
  ap.add_argument("--batch", type=int, default=None, help="per-device batch instead of the paper's")
  ap.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
  ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the compile")
  ap.add_argument("--budget_s", type=float, default=540.0, help="skip variants that would end past this")
  ap.add_argument("--commit", default=None, help="the commit to print (default: git's, of this checkout)")
  args = ap.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
    raise InputError("--steps and --batch must be at least 1, --warmup at least 0")
  args.argv = argv
  return args


def measure(planned: list, args) -> bool:
  """Fills the planned rows in order, each within the budget; returns whether SIGTERM stopped it (the rows after
  the stopped one are dropped)."""
  flops, slowest = {}, {}  # FLOPs per (config, batch, model_key); the slowest variant of each config so far
  done = []
  try:
    for row, config, batch in planned:
      done.append(row)
      elapsed = time.perf_counter() - START
      if elapsed + slowest.get(row.config, 0.0) > args.budget_s:
        row.note = f"skipped: --budget_s {args.budget_s:g} (at {elapsed:.0f} s)"
        log(f"{row.config} {row.variant}: {row.note}")
        continue
      started = time.perf_counter()
      count_key = (row.config, batch, model_key(config))
      try:
        if count_key not in flops:
          log(f"{row.config}: counting model FLOPs (batch {batch}, {row.dtype})")
          flops[count_key] = model_flops.step_flops(config, data_spec(config), batch, train.compile_train_step)
          log(f"{row.config}: {flops[count_key]:.4g} FLOPs per step")
        log(f"{row.config} {row.variant}: compiling and timing")
        run_variant(row, config, batch, flops[count_key], jax.devices()[0].device_kind, args)
      except Stopped:
        raise
      except Exception as e:  # noqa: BLE001  (out of memory, a kernel that does not apply: the other rows still run)
        row.note = "failed: " + one_line(e)
      slowest[row.config] = max(slowest.get(row.config, 0.0), time.perf_counter() - started)
      log(f"{row.config} {row.variant}: " + " | ".join(row.cells()[2:]))
  except Stopped:
    if done and done[-1].step_s is None and not done[-1].note:
      done[-1].note = "stopped by SIGTERM"
    del planned[len(done) :]
    log("SIGTERM: printing the rows measured so far")
    return True
  return False


def main(argv: list[str]) -> int:
  try:
    args = parse(argv)
    planned = []  # (row, config, batch): every input is checked before anything compiles
    for name, variant in plan_runs(args):
      paper = PAPER[name]
      config = variant_config(paper, variant, args.tiny)
      batch = per_device_batch(config, paper, args.tiny, args.batch)
      label = os.path.basename(paper.path) + (":tiny" if args.tiny else "")
      planned.append((Row(label, variant, settings_of(config), dtype_of(config), batch), config, batch))
  except (InputError, ValueError, TypeError) as e:
    print(f"device_check: error: {e}", file=sys.stderr)
    return 2

  def on_sigterm(signum, frame):
    raise Stopped()

  kind = jax.devices()[0].device_kind
  commit = args.commit or commit_label()
  log(f"{kind} ({jax.default_backend()}), jax {jax.__version__}, commit {commit}; {len(planned)} variants")
  # Both put back afterwards, so a caller's process (a test) keeps its own.
  previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
  previous_cache = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)  # cold compiles, whatever the environment sets
  try:
    stopped = measure(planned, args)
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
    jax.config.update("jax_enable_compilation_cache", previous_cache)
  print(table([row for row, _, _ in planned], kind, commit, args, stopped), flush=True)
  return 1 if stopped else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
