"""The package's import graph: no cycles, layers import downward only, nothing imports the `ardm` entry point, and
no module reaches into another's private names. Every import counts, at the top of a module or inside a function.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ardm_jax"

# From the bottom up; a module may import its own layer or any layer below. Entries match a module by name or as a
# prefix (`coding` is coding.py or any module of a package ardm_jax/coding/; `upscale` also `upscale_*.py`); the
# longest matching entry wins, so `coding_model` is not `coding`.
LAYERS = [
  (
    "math, policy and coding: pure functions of arrays, no network, no files",
    [
      "ardm",
      "transitions",
      "upscale",
      "baselines",
      "distributions",
      "objective",
      "policy",
      "coding",
      "entropy_models",
      "alphabets",
    ],
  ),
  ("networks, data sources and configs", ["nets", "data", "configs", "config_checks"]),
  (
    "the runner: sharding, training, checkpoints, held-out evaluation, opening a workdir, sampling",
    [
      "sharding",
      "distributed",
      # What JAX must find when it starts (fake devices, a TPU slice's compiler); imports nothing of ours.
      "device_env",
      "train_state",
      "checkpoint",
      "compile_cache",
      "held_out",
      "train",
      # What a run measures about itself: model FLOPs of a train step (the trainer and benchmarks/throughput.py
      # share them), device peaks for MFU, the progress line and device memory, goodput, and profiles.
      "model_flops",
      "device_peaks",
      "progress",
      "goodput",
      "profiling",
      "workdir",
      # Sampling and the bound over orders are library code over an opened model, as held_out is.
      "sample",
      "order_bound",
      # The --topology compile report: train and eval steps of a config, compiled ahead of time, their costs with
      # loops counted by trip count, and the fit search.
      "loop_costs",
      "slice_fit",
      "slice_report",
    ],
  ),
  (
    # The "jobs and file IO" layer, in two steps: the formats the jobs share (and the coder's network side,
    # which the formats name and model folders fingerprint) sit below the job modules, so no format imports a job.
    "file formats and the coder's model: item files, the compressed-file table, model folders and hub names",
    [
      "file_io",
      "file_items",
      "coding_model",
      "coding_policy",
      "coding_items",
      "compress",
      "model_dir",
      "model_card",
      "hub",
    ],
  ),
  (
    # preflight runs every other job on fake devices, as a user would.
    "the jobs: one module per command",
    ["jobs", "preflight"],
  ),
  ("the entry point: parse and dispatch", ["cli"]),
]


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int | None:
  best, best_len = None, -1
  for index, (_, entries) in enumerate(LAYERS):
    for entry in entries:
      if name == entry or name.startswith(entry + ".") or name.startswith(entry + "_"):
        if len(entry) > best_len:
          best, best_len = index, len(entry)
  return best


def package_modules(package: pathlib.Path = PACKAGE) -> dict[str, ast.Module]:
  return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(package.rglob("*.py"))}


def ours(name: str, known: set[str]) -> str | None:
  """The module of this package that an absolute import name refers to (the longest known prefix), or None."""
  if not name.startswith("ardm_jax"):
    return None
  rest = name[len("ardm_jax.") :] if name != "ardm_jax" else ""
  while rest and rest not in known:
    rest = rest.rpartition(".")[0]
  return rest or None


def import_edges(modules: dict[str, ast.Module]) -> dict[str, dict[str, int]]:
  """module -> {imported module of this package: line}; `from ardm_jax import x` counts x when it is a module."""
  known = set(modules)
  edges = {}
  for name, tree in modules.items():
    out = {}
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          package = name if (PACKAGE / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
          for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
          base = "ardm_jax" + ("." + package if package else "") + ("." + base if base else "")
        # `from ardm_jax.data import audio` is an import of the submodule; of the package only for other names.
        names = [f"{base}.{alias.name}" for alias in node.names]
        modules_named = [n for n in names if n.removeprefix("ardm_jax.") in known]
        targets = names if len(modules_named) == len(names) else names + [base]
      for target in targets:
        module = ours(target, known)
        if module and module != name:
          out.setdefault(module, node.lineno)
    edges[name] = out
  return edges


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "active"
    stack.append(node)
    for nxt in edges.get(node, {}):
      if state.get(nxt) == "active":
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(edges):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def layer_violations(edges: dict[str, dict[str, int]]) -> list[str]:
  problems = []
  for name, targets in sorted(edges.items()):
    if name == "":  # ardm_jax/__init__.py
      continue
    mine = layer_of(name)
    for target, line in sorted(targets.items()):
      theirs = layer_of(target)
      if theirs is not None and mine is not None and theirs > mine:
        problems.append(
          f"{name} (layer {mine}: {LAYERS[mine][0]}) imports {target} (layer {theirs}: {LAYERS[theirs][0]}) "
          f"at line {line}"
        )
  return problems


def private_uses(modules: dict[str, ast.Module]) -> list[str]:
  """`from ardm_jax.x import _name` and `x._name` where x is a module of this package."""
  problems = []
  known = set(modules)
  for name, tree in modules.items():
    module_aliases = set()  # local names bound to modules of this package
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        module_aliases |= {alias.asname for alias in node.names if alias.asname and ours(alias.name, known)}
      elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ardm_jax"):
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          if full.removeprefix("ardm_jax.") in known:
            module_aliases.add(alias.asname or alias.name)
          elif alias.name.startswith("_") and not alias.name.startswith("__"):
            problems.append(f"{name} line {node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
      if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in module_aliases
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
      ):
        problems.append(f"{name} line {node.lineno}: {node.value.id}.{node.attr}")
  return problems


@pytest.fixture(scope="module")
def modules():
  return package_modules()


def test_every_module_has_a_layer(modules):
  unplaced = sorted(name for name in modules if name and layer_of(name) is None)
  assert not unplaced, f"place these modules in LAYERS of {__file__}: {unplaced}"


def test_the_import_graph_has_no_cycle(modules):
  cycle = find_cycle(import_edges(modules))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_import_downward_only(modules):
  problems = layer_violations(import_edges(modules))
  assert not problems, "upward imports:\n" + "\n".join(problems)


def test_nothing_imports_the_entry_point(modules):
  importers = sorted(name for name, targets in import_edges(modules).items() if "cli" in targets)
  assert not importers, f"these modules import ardm_jax/cli.py (call the jobs or the library instead): {importers}"


def test_no_module_uses_another_modules_private_names(modules):
  problems = private_uses(modules)
  assert not problems, "private names used across modules:\n" + "\n".join(problems)


def test_the_checks_catch_an_upward_import_a_cycle_and_a_private_name(tmp_path):
  """The checks above on a small fake package: a job importing the entry point, a cycle, a private import."""
  fake = {
    "cli": "from ardm_jax.jobs import sample\n",
    "jobs": "",
    "jobs.sample": "def run():\n  from ardm_jax import cli\n",
    "ardm": "from ardm_jax import upscale\n",
    "upscale": "from ardm_jax.ardm import _helper\nimport ardm_jax.ardm\n",
  }
  modules = {name: ast.parse(code) for name, code in fake.items()}
  edges = import_edges(modules)
  assert edges["jobs.sample"] == {"cli": 2}
  assert any("jobs.sample (layer 4" in p and "imports cli" in p for p in layer_violations(edges))
  assert find_cycle(edges) is not None
  assert private_uses(modules) == ["upscale line 1: from ardm_jax.ardm import _helper"]
