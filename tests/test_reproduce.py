"""benchmarks/reproduce.py end to end in its --smoke mode (tiny models, 4 steps): the tables, the verdicts, the
RESULTS.md section (replaced, never duplicated, on a rerun) and the PNG."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reproduce_smoke_writes_its_section_and_plot(tmp_path):
  results = tmp_path / "RESULTS.md"
  results.write_text("# Measured results\n\n## Earlier section\n\nkept\n")
  png = tmp_path / "steps.png"
  cmd = [
    sys.executable,
    "-P",
    os.path.join(REPO, "benchmarks", "reproduce.py"),
    "--root",
    str(tmp_path / "runs"),
    "--smoke",
    "--datasets",
    "digits",
    "--results",
    str(results),
    "--png",
    str(png),
  ]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  for heading in (
    "### 1. OA-ARDM against D3PM",
    "### 2. DP-optimal",
    "### 3. Upscale",
    "### 4. Per-item",
    "### Reference: single-order ARM",
  ):
    assert heading in out.stdout
  assert out.stdout.count("reproduced**") >= 4  # one verdict per claim
  for b in (5, 20, 64):  # reproduce.SMOKE_BUDGETS and D
    assert f"| digits | {b} |" in out.stdout
  text = results.read_text()
  assert "## Earlier section\n\nkept" in text and "## Reproduction of the paper's claims" in text
  assert png.stat().st_size > 10_000
  # A rerun reuses the finished workdirs and measurements and replaces its section instead of appending one.
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert results.read_text().count("<!-- reproduce.py: start -->") == 1


def test_reproduce_rejects_unknown_datasets(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-P",
      os.path.join(REPO, "benchmarks", "reproduce.py"),
      "--root",
      str(tmp_path),
      "--datasets",
      "cifar",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert out.returncode == 2 and "--datasets takes digits and/or text" in out.stderr
