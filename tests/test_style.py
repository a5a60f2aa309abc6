"""The house style is enforced here, not in review: ruff's formatter in check mode and its linter (pyproject.toml)."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args):
  exe = shutil.which("ruff") or pytest.fail("ruff is missing: pip install -e '.[test]' installs it")
  return subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_tree_is_formatted():
  out = _ruff("format", "--check", "--diff", ".")
  assert out.returncode == 0, f"run `ruff format .` to fix:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"


def test_tree_passes_the_linter():
  out = _ruff("check", "--output-format", "concise", ".")
  assert out.returncode == 0, f"`ruff check --fix .` fixes some:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"


def test_style_check_catches_a_misformatted_file(tmp_path):
  # The checks above must be able to fail: a 4-space indented file is refused under this repo's configuration.
  bad = tmp_path / "bad.py"
  bad.write_text("def f(x):\n    return x\n")
  out = _ruff("format", "--check", "--config", os.path.join(REPO, "pyproject.toml"), str(bad))
  assert out.returncode == 1 and "bad.py" in out.stdout + out.stderr
