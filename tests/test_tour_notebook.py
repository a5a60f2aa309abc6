"""notebooks/tour.ipynb runs top to bottom (shrunk by ARDM_TOUR_TINY=1) and each of its eight sections shows its
output: a picture and the line its cell prints. The notebook is committed without outputs."""

import os

from nbclient import NotebookClient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "tour.ipynb")

# Section heading (the start of its "## " line) -> text the section's cells print.
SECTIONS = {
  "1. Train or load": "test bits/dim:",
  "2. The ARDM idea": "unknown variables",
  "3. The per-step loss": "sum_t L_t / D =",
  "4. Policies": "| budget | DP bits/dim | naive bits/dim |",
  "5. Samples at budgets 1, 8, 64 = D": "samples drawn with B = 1, B = 8, B = 64 = D",
  "6. Completion": "kept exactly in every one",
  "7. Lossless compression": "byte-identical to the PNG: True",
  "8. Likelihood": "| K orders |",
}


def _sections(nb) -> dict:
  """{heading: the outputs of the code cells below it, up to the next heading}."""
  sections, current = {}, None
  for cell in nb.cells:
    if cell.cell_type == "markdown" and cell.source.startswith("## "):
      current = cell.source.splitlines()[0][3:]
      sections[current] = []
    elif cell.cell_type == "code" and current is not None:
      sections[current] += cell.get("outputs", [])
  return sections


def _find(sections: dict, prefix: str) -> list:
  matches = [outputs for heading, outputs in sections.items() if heading.startswith(prefix)]
  assert len(matches) == 1, f"the notebook needs one section '## {prefix}...', found {list(sections)}"
  return matches[0]


def test_tour_notebook_is_committed_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code), "clear the notebook's outputs"
  assert "google.colab" in code[0].source and "ARDM_TOUR_TINY" in code[0].source
  sections = _sections(nb)
  for prefix in SECTIONS:
    _find(sections, prefix)


@pytest.mark.xdist_group("tour_notebook")
def test_tour_notebook_runs_and_every_section_shows_its_output(tmp_path, monkeypatch):
  # The kernel inherits this environment: the tiny settings, this checkout's package first on the path, and the
  # test session's CPU platform and compile cache (tests/conftest.py).
  monkeypatch.setenv("ARDM_TOUR_TINY", "1")
  monkeypatch.delenv("ARDM_TOUR_MODEL_DIR", raising=False)
  monkeypatch.delenv("ARDM_TOUR_WORK", raising=False)
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

  assert os.path.isfile(tmp_path / "tour_runs" / "digits.ardm")
  sections = _sections(nb)
  for prefix, text in SECTIONS.items():
    outputs = _find(sections, prefix)
    assert not [o for o in outputs if o.output_type == "error"], prefix
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert text in printed, f"section {prefix!r} did not print {text!r}:\n{printed[-2000:]}"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"section {prefix!r} shows no picture"
