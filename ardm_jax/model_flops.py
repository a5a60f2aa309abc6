"""Model FLOPs of one train step: the number MFU divides by, counted the same way by the trainer and by
benchmarks/throughput.py.

The count is GLOBAL: the FLOPs of one optimisation step on the whole global batch, counted once, without
activation recomputation. It is XLA's cost analysis of the train step lowered for ONE device (a 1x1x1 mesh, so the
program is the unpartitioned one and nothing is split, replicated or communicated) with the full global batch,
`model.remat` off, and layer scans and attention kernels replaced by their unrolled / plain-einsum forms
(COUNTING_MODEL_SETTINGS: XLA counts a loop body once and cannot see into a cuDNN call; the math is the same).

The program is lowered, never compiled: lowering traces the step and emits its HLO, which costs seconds where a
compile costs tens of seconds (digits.py on 2 CPU cores: about 3 s against 12 s), so a run does not pay for a
second full compile at its start. The unoptimised HLO also gives the same count on every backend. On the CPU it is
0.1-2.4 % below the count of the compiled one-device program (elementwise work that XLA's optimiser rewrites; the
matmuls and convolutions are the same).

The timed, partitioned step cannot give this number: its `cost_analysis()` describes one device's SPMD program
(about 1/N of the work on N devices, plus whatever each device repeats, such as a replicated optimizer update), and
with remat on it also counts the forward pass that the backward pass recomputes, which is hardware work but not
model work. The count is therefore the same on 1 and N devices for the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable
import copy
from typing import Any

import jax
import jax.numpy as jnp

from ardm_jax import sharding
from ardm_jax.train_state import DataSpec, Setup, build_setup

# Model settings of the counting program. They change how the same math is computed, never the math:
#   remat off        the backward pass would recompute forward activations, hardware work that is not model work;
#   scan_layers off  XLA's cost analysis counts a while loop's body once, not once per iteration;
#   attention_impl   'plain' einsums instead of jax.nn.dot_product_attention, which can become a custom call
#                    (cuDNN) whose FLOPs the cost analysis does not see.
COUNTING_MODEL_SETTINGS = {"remat": ("none", False), "scan_layers": (False,), "attention_impl": ("plain",)}

METHOD = "XLA's count of the lowered one-device program, no remat/scan"


def flops_of(cost: Any) -> float:
  """The 'flops' entry of a cost analysis (a dict, or a list of one dict from older JAX); NaN where absent."""
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def counting_setup(config: Any, spec: DataSpec) -> Setup:
  """The config on one local device (1x1x1 mesh), without remat, layer scans or attention kernels.

  Args:
    config: the experiment config; left unchanged (the counting program uses a copy).
    spec: the data's shape and classes.

  Returns:
    The Setup whose train step's XLA FLOP count is the model's (see the module docstring); nothing is allocated.
  """
  flat = copy.deepcopy(config)
  for key, values in COUNTING_MODEL_SETTINGS.items():
    if key in flat.model:
      for value in values:  # the first that the field's type takes (remat: 'none' in newer configs, else False)
        try:
          flat.model[key] = value
          break
        except TypeError:
          continue
  for axis in sharding.MESH_AXES:
    flat.mesh[axis] = 1
  # A local device: on a host other than process 0, global device 0 belongs to another process.
  return build_setup(flat, spec, devices=jax.local_devices()[:1])


def lowered_flops(fn: Callable, *args: Any, context: Callable) -> float:
  """XLA's FLOP count of jitted `fn` lowered (not compiled) for abstract `args`.

  Args:
    fn: a jitted function.
    *args: its arguments, abstract (jax.ShapeDtypeStruct) or concrete.
    context: the Setup's context manager factory (mesh and logical-axis rules for tracing).

  Returns:
    The FLOPs of one call.
  """
  with context():
    return flops_of(fn.lower(*args).cost_analysis())


def is_counting_program(config: Any, num_devices: int) -> bool:
  """Whether `config`'s own train step on `num_devices` devices already is the counting program: one device, and
  remat, layer scans and attention kernels as COUNTING_MODEL_SETTINGS has them (or absent from the network)."""
  settings = COUNTING_MODEL_SETTINGS.items()
  return num_devices == 1 and all(key not in config.model or config.model[key] in values for key, values in settings)


def step_flops(
  config: Any,
  spec: DataSpec,
  batch_size: int,
  compile_step: Callable[[Setup], Callable],
  own_program: tuple[int, Any] | None = None,
) -> float:
  """Model FLOPs of one train step on the global batch (see the module docstring).

  Args:
    config: the experiment config.
    spec: the data's shape and classes.
    batch_size: the GLOBAL batch size.
    compile_step: builds the jitted `train_step(state, batch, key)` of a Setup: train.compile_train_step (an
      argument, since the trainer imports this module).
    own_program: (number of devices, jax.stages.Lowered) of the caller's own train step on the global batch; where
      that already is the counting program (is_counting_program), its count is taken and nothing else is traced.
      The trainer's step also carries its divergence record, scalar checks that leave the count of digits.py:tiny
      unchanged (tests/test_train.py compares the two).

  Returns:
    The FLOPs of one optimisation step.
  """
  if own_program is not None and is_counting_program(config, own_program[0]):
    return flops_of(own_program[1].cost_analysis())
  setup1 = counting_setup(config, spec)
  batch = jax.ShapeDtypeStruct((batch_size,) + tuple(spec.shape), jnp.int32)
  key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  return lowered_flops(compile_step(setup1), setup1.abstract_state, batch, key, context=setup1.context)
