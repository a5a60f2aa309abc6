"""Goodput: where a run's wall time went (compile, train steps, held-out evaluation, checkpoints, data preparation
and the rest), printed at the end, appended to `W/goodput.json` (one object per run segment) and logged to
TensorBoard.

A stopwatch charges host wall time to the part the trainer is in (`with stopwatch.part("train"): ...`; an inner
part pauses the outer one) and the time outside every part to `other`, so the parts of a segment add up to its wall
time. It reads the host clock only and never waits for the device: train.train_and_evaluate places its parts so
that the syncs it makes anyway fall in the right one. From the call's start to its end:
  data        loading the data set, then each step's host batch and its transfer; while the device still runs
              earlier steps this host time overlaps them, so it bounds the device's wait for data from above;
  compile     the state's initialisation (a jitted program compiled and run once), the train step's lowering and
              ahead-of-time compile, and the model FLOP count (model_flops.step_flops: XLA's cost analysis of that
              lowering, or of a one-device lowering where the run's program is not the counting one);
  train       dispatching steps and the waits for them: the metric fetch of a progress line and the divergence
              check before each evaluation and checkpoint, which wait for every step dispatched so far (and, in a
              profiled run, the end of the trace: the wait for its last step and writing it);
  eval        held-out evaluations, periodic and final, their compiles included;
  checkpoint  restoring, saving (its synchronous part) and waiting for asynchronous saves to finish;
  other       the rest: building the setup, opening the workdir and the metric writer, writing metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import json
import time

from etils import epath
import jax

PARTS = ("compile", "train", "eval", "checkpoint", "data", "other")
GOODPUT_FILE = "goodput.json"


class Goodput:
  """Wall-time split of one run segment (module docstring)."""

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self.start = self._mark = clock()
    self._seconds = dict.fromkeys(PARTS, 0.0)
    self._stack: list[str] = []

  def _charge(self) -> float:
    now = self._clock()
    if self._stack:
      self._seconds[self._stack[-1]] += now - self._mark
    self._mark = now
    return now

  @contextlib.contextmanager
  def part(self, name: str) -> Iterator[None]:
    """Charges the time inside the block to part `name` (one of PARTS but 'other')."""
    if name not in PARTS or name == "other":
      raise ValueError(f"unknown goodput part {name!r}; use one of {PARTS[:-1]}")
    self._charge()
    self._stack.append(name)
    try:
      yield
    finally:
      self._charge()
      self._stack.pop()

  def seconds(self, *names: str) -> float:
    """Seconds charged so far to the parts `names`, the one running now included."""
    self._charge()
    return sum(self._seconds[name] for name in names)

  def segment(self, **extra) -> dict:
    """This segment so far: `wall_s` and one `<part>_s` per part (`other_s` the rest, so they sum to `wall_s`),
    then `extra` (e.g. the steps it ran)."""
    wall = self._charge() - self.start
    parts = {f"{name}_s": self._seconds[name] for name in PARTS[:-1]}
    parts["other_s"] = wall - sum(parts.values())
    return {"wall_s": wall} | parts | extra


def summary(segment: dict) -> str:
  """One line: the wall time, the share spent in train steps, and every part."""
  wall = segment["wall_s"]
  share = segment["train_s"] / wall if wall > 0 else 0.0
  parts = ", ".join(f"{name} {segment[f'{name}_s']:.1f}s" for name in PARTS)
  return f"goodput: {wall:.1f}s wall, {100 * share:.1f}% in train steps ({parts})"


def scalars(segment: dict) -> dict[str, float]:
  """The segment as TensorBoard scalars `goodput/<part>_s`, `goodput/wall_s` and `goodput/train_share`."""
  out = {f"goodput/{key}": float(value) for key, value in segment.items() if key.endswith("_s")}
  out["goodput/train_share"] = segment["train_s"] / segment["wall_s"] if segment["wall_s"] > 0 else 0.0
  return out


def append(workdir: str, segment: dict) -> list[dict]:
  """Appends `segment` to W/goodput.json (a JSON list, one object per run segment; process 0 writes).

  Args:
    workdir: the run's workdir (local or gs://).
    segment: Goodput.segment().

  Returns:
    Every segment recorded in the workdir, this one last.
  """
  path = epath.Path(workdir) / GOODPUT_FILE
  segments = json.loads(path.read_text()) if path.exists() else []
  segments.append(segment)
  if jax.process_index() == 0:
    path.write_text(json.dumps(segments, indent=2) + "\n")
  return segments


def record(stopwatch: Goodput, workdir: str, writer, log: Callable, step: int, **extra) -> dict:
  """Ends a run segment: appends it to W/goodput.json, writes its scalars to TensorBoard at `step` and prints the
  summary line.

  Args:
    stopwatch: the segment's Goodput.
    workdir: the run's workdir.
    writer: the run's clu metric writer.
    log: prints a line (process 0's print).
    step: the step the segment ended at.
    **extra: recorded beside the parts (e.g. start_step, end_step).

  Returns:
    The segment as written.
  """
  segment = stopwatch.segment(**extra)
  append(workdir, segment)
  writer.write_scalars(step, scalars(segment))
  log(summary(segment), flush=True)
  return segment
