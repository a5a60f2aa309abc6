"""FLOPs and bytes accessed of a compiled program with every loop counted by its trip count.

XLA's cost analysis (`compiled.cost_analysis()`) counts a while loop's body once, whatever its trip count, so a
program with scanned layers reports the work of one layer where it runs N. This module corrects the count from the
program's own optimised HLO: for each while loop whose trip count XLA knows (`known_trip_count`, which a scan over
layers always has), it analyses the loop body as a program of its own and adds (runs - 1) times the body's own
cost, where runs is the loop's trip count times the trip counts of the loops around it.

The correction uses XLA's generic cost analysis of the optimised HLO (the one-device CPU client's analyser; the
program's fusions and layouts are the target's, so dots and convolutions count the same; bytes follow the HLO's
shapes). On the target's own analysis of the whole program it adds only the loop bodies' missing runs. A loop
without a known trip count is counted once and named in `unknown_trip_counts`.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jaxlib._hlo as hlo
import jaxlib._jax as xla

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_WHILE = re.compile(r"\bwhile\(%?([\w.\-]+)\).*\bcondition=%?([\w.\-]+).*\bbody=%?([\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CALLS = re.compile(r"\b(?:calls|to_apply|body|condition|branch_computations)=(\{[^}]*\}|%?[\w.\-]+)")
_NAME = re.compile(r"[\w.\-]+")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z\-]+)\((.*?)\)(.*)$")
_METADATA = re.compile(r",? metadata=\{[^}]*\}")  # source locations: not needed, and the parser warns about them


@dataclasses.dataclass(frozen=True)
class Cost:
  flops: float
  bytes_accessed: float
  # (body computation, trip count) of each loop counted by its trip count, outermost first.
  loops: tuple[tuple[str, int], ...] = ()
  unknown_trip_counts: tuple[str, ...] = ()


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
  """The module's computations by name (their lines, header first) and the entry's name."""
  comps, entry, name = {}, None, None
  for line in text.splitlines():
    if name is None:
      m = _HEADER.match(line)
      if m:
        name = m.group(2)
        comps[name] = [line]
        entry = name if m.group(1) else entry
    else:
      comps[name].append(line)
      if line.strip() == "}":
        name = None
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  return comps, entry


def _callees(lines: list[str]) -> set[str]:
  out = set()
  for line in lines[1:]:
    for m in _CALLS.finditer(line):
      out.update(_NAME.findall(m.group(1)))
  return out


def _analyse(text: str) -> tuple[float, float]:
  module = hlo.hlo_module_from_text(_METADATA.sub("", text))
  cost = xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def _as_entry(comps: dict[str, list[str]], root: str) -> str:
  """A module whose entry is computation `root`, holding it and every computation it calls."""
  keep, todo = [], [root]
  while todo:
    name = todo.pop()
    if name in keep or name not in comps:
      continue
    keep.append(name)
    todo.extend(_callees(comps[name]))
  parts = []
  for name in reversed(keep):  # callees before callers, as XLA prints them
    lines = list(comps[name])
    header = lines[0].removeprefix("ENTRY ")
    lines[0] = ("ENTRY " if name == root else "") + header
    parts.append("\n".join(lines))
  return "HloModule loop_body\n\n" + "\n\n".join(parts) + "\n"


def _instructions(comps: dict[str, list[str]]) -> dict[str, tuple[str, list[str], str]]:
  """Every instruction of the module by name (names are unique in a module): (opcode, operand names, the rest)."""
  out = {}
  for lines in comps.values():
    for line in lines[1:]:
      m = _INSTRUCTION.match(_METADATA.sub("", line))
      if m:
        operands = [op.split()[-1].lstrip("%") for op in re.sub(r"/\*.*?\*/", "", m.group(3)).split(",") if op.strip()]
        out[m.group(1)] = (m.group(2), operands, m.group(4))
  return out


def _constant(instructions, name: str) -> int | None:
  """The integer a scalar constant holds, through copies; None if `name` is not one."""
  for _ in range(8):
    opcode, operands, _rest = instructions.get(name, ("", [], ""))
    if opcode == "copy" and operands:
      name = operands[0]
    elif opcode == "constant" and operands and re.fullmatch(r"-?\d+", operands[0]):
      return int(operands[0])
    else:
      return None
  return None


def _root(comps: dict[str, list[str]], name: str) -> tuple[str, list[str], str] | None:
  """(opcode, operand names, the rest) of computation `name`'s ROOT instruction."""
  line = next((line for line in comps.get(name, []) if line.lstrip().startswith("ROOT ")), "")
  m = _INSTRUCTION.match(_METADATA.sub("", line))
  if not m:
    return None
  operands = [op.split()[-1].lstrip("%") for op in re.sub(r"/\*.*?\*/", "", m.group(3)).split(",") if op.strip()]
  return m.group(2), operands, m.group(4)


def _counted_loop(comps: dict[str, list[str]], instructions, init: str, condition: str) -> int | None:
  """The trip count of a loop whose compiler left no `known_trip_count` (the TPU compiler's): a counter that
  starts at a constant and runs while below a constant, `i < N`, the way JAX lowers scan and fori_loop (step 1)."""
  compare = _root(comps, condition)
  if compare is None:
    return None
  opcode, operands, rest = compare
  if opcode == "fusion":  # XLA:CPU wraps the compare in a fusion of its two operands
    called = re.search(r"calls=%?([\w.\-]+)", rest)
    inner = _root(comps, called.group(1)) if called else None
    if inner is None or inner[0] != "compare":
      return None
    params = {name: int(p) for name, (op, args, _) in instructions.items() if op == "parameter" for p in args[:1]}
    try:
      operands = [operands[params[name]] for name in inner[1]]
    except (KeyError, IndexError):
      return None
    opcode, rest = inner[0], inner[2]
  if opcode != "compare" or "direction=LT" not in rest or len(operands) != 2:
    return None
  counter, bound = operands
  opcode, _, rest = instructions.get(counter, ("", [], ""))
  index = re.search(r"index=(\d+)", rest)
  limit = _constant(instructions, bound)
  if opcode != "get-tuple-element" or index is None or limit is None:
    return None
  opcode, elements, _ = instructions.get(init, ("", [], ""))
  start = _constant(instructions, elements[int(index.group(1))]) if opcode == "tuple" else None
  return None if start is None else max(limit - start, 0)


def _loops(comps: dict[str, list[str]], instructions, name: str, seen: frozenset = frozenset()):
  """(body, trip count or None, the loops directly inside it...) for each while loop reachable from `name` without
  passing through another loop's body."""
  out = []
  for line in comps.get(name, [])[1:]:
    m = _WHILE.search(line)
    if m:
      trip = _TRIP_COUNT.search(line)
      count = int(trip.group(1)) if trip else _counted_loop(comps, instructions, m.group(1), m.group(2))
      out.append((m.group(3), count))
  for callee in _callees(comps.get(name, [])):
    is_body = any(callee == body for body, _ in out)
    if not is_body and callee not in seen:
      out.extend(_loops(comps, instructions, callee, seen | {name}))
  return out


def program_cost(text: str, flops: float, bytes_accessed: float) -> Cost:
  """The cost of a compiled program with each loop counted by its trip count.

  Args:
    text: the optimised HLO (`compiled.as_text()`).
    flops: the program's FLOPs as its compiler's cost analysis reports them (each loop body once).
    bytes_accessed: likewise its bytes accessed.

  Returns:
    The corrected totals, and the loops that were multiplied or could not be.
  """
  comps, entry = _computations(text)
  instructions = _instructions(comps)
  cache: dict[str, tuple[float, float]] = {}

  def once(body):  # the body analysed as a program: inner loops' bodies counted once
    if body not in cache:
      cache[body] = _analyse(_as_entry(comps, body))
    return cache[body]

  loops, unknown = [], []

  def walk(name, runs):
    """Adds (runs - 1) x the own cost of each loop body under `name`, whose enclosing loops run `runs` times."""
    extra_flops = extra_bytes = 0.0
    for body, trip in _loops(comps, instructions, name):
      if trip is None:
        unknown.append(body)
        trip = 1
      else:
        loops.append((body, trip))
      body_runs = runs * trip
      f, b = once(body)
      inner_f = inner_b = 0.0
      for inner, _ in _loops(comps, instructions, body):
        fi, bi = once(inner)
        inner_f, inner_b = inner_f + fi, inner_b + bi
      # The body's own cost (its inner loops' bodies excluded) runs body_runs times; once is already counted.
      extra_flops += (body_runs - 1) * (f - inner_f)
      extra_bytes += (body_runs - 1) * (b - inner_b)
      ef, eb = walk(body, body_runs)
      extra_flops, extra_bytes = extra_flops + ef, extra_bytes + eb
    return extra_flops, extra_bytes

  extra_flops, extra_bytes = walk(entry, 1)
  return Cost(flops + extra_flops, bytes_accessed + extra_bytes, tuple(loops), tuple(unknown))


def compiled_cost(compiled) -> Cost:
  """`program_cost` of a `jax.stages.Compiled` (one device's program, as its cost analysis reports it)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return program_cost(compiled.as_text(), float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)))
