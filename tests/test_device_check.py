"""benchmarks/device_check.py on the CPU: the :tiny configs give a table with one row per variant and finite positive
measurements, MFU is '-' where the device has no peak, the budget guard skips, and bad input is one line.

Only text8.py:tiny is timed: about 4 s a variant on 2 cores, where cifar10.py:tiny takes about 15 s."""

import math
import os
import signal
import subprocess
import sys

from conftest import load_benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "device_check.py")
NUMERIC = ("per-device batch", "compile s", "step ms (median)", "examples/s", "model TFLOP/s", "XLA memory GiB")


def run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def table_rows(stdout: str) -> list[dict[str, str]]:
  lines = [line for line in stdout.splitlines() if line.startswith("|")]
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  assert set(lines[1].replace("|", "").replace("-", "")) == set(), lines[1]  # the separator
  return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


def test_tiny_run_prints_one_measured_row_per_variant():
  out = run("--tiny", "--configs", "text8", "--variants", "config,remat=full", "--steps", "2", "--warmup", "1")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("### cpu, jax "), out.stdout
  rows = table_rows(out.stdout)
  assert [(row["config"], row["variant"]) for row in rows] == [
    ("text8.py:tiny", "config"),
    ("text8.py:tiny", "remat=full"),
  ]
  for row in rows:
    for column in NUMERIC:
      value = float(row[column])
      assert math.isfinite(value) and value > 0, (column, row)
    assert row["MFU % (bf16 peak)"] == row["MFU % (dtype peak)"] == "-", row  # no peak for the CPU
    assert row["note"] == "", row
  # What ran: the variant's remat and attention, and what 'auto' became in the compiled program.
  assert [row["remat / attention / layers / dtype"] for row in rows] == [
    "none / auto:xla / scan / float32",
    "full / auto:xla / scan / float32",
  ]
  assert "no peak FLOP/s known for device kind 'cpu'" in out.stdout
  assert "compiling and timing" in out.stderr  # progress goes to stderr


def test_budget_skips_every_variant_past_it(capsys):
  device_check = load_benchmark("device_check")  # in this process: nothing compiles
  handler = signal.getsignal(signal.SIGTERM)
  assert device_check.main(["--tiny", "--variants", "config,attn=cudnn", "--budget_s", "0"]) == 0
  assert signal.getsignal(signal.SIGTERM) is handler  # put back
  rows = table_rows(capsys.readouterr().out)
  assert [(row["config"], row["variant"]) for row in rows] == [
    ("cifar10.py:tiny", "config"),
    ("text8.py:tiny", "config"),
    ("cifar10.py:tiny", "attn=cudnn"),
    ("text8.py:tiny", "attn=cudnn"),
  ]
  assert all(row["note"].startswith("skipped: --budget_s 0") and row["step ms (median)"] == "-" for row in rows)


def test_bad_input_is_one_line(capsys):
  device_check = load_benchmark("device_check")  # in this process: the checks come before anything compiles
  for args, message in (
    (["--variants", "config,remat=sometimes"], "unknown variant 'remat=sometimes'; choose from config, remat=none"),
    (["--configs", "mnist"], "unknown config 'mnist'; choose from cifar10, text8"),
    (["--steps", "0"], "--steps and --batch must be at least 1, --warmup at least 0"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
  ):
    assert device_check.main(args) == 2, args
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(f"device_check: error: {message}"), (args, out)
    assert len(out.err.strip().splitlines()) == 1, out.err
