"""The train state, the optimizer, and sharded state creation shared by training, evaluation and sampling."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np
import optax

from ardm_jax import data, objective, sharding
from ardm_jax.alphabets import TEXT8_ALPHABET
from ardm_jax.data.audio import PCM_BITS, SAMPLE_RATE
from ardm_jax.nets import build_network


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  # Running per-step loss L_t (bits per variable) per global step s * D + t (stage s), so the estimate can be
  # exported for parallel schedules without another pass over the data: a mean that is exact over the first
  # train.lt_window samples of a step and then an exponential average over about that many (train.update_lt_tracker),
  # and how many samples each step has seen.
  lt_mean: jax.Array
  lt_count: jax.Array


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a job must know about the data without loading it (saved beside the checkpoints)."""

  name: str
  kind: str
  shape: tuple[int, ...]
  num_classes: int
  alphabet: str | None = None
  sample_rate: int | None = None  # audio only: how to write samples as WAV
  bits: int | None = None  # audio only: bits per sample (K = 2**bits)

  @property
  def num_steps(self) -> int:
    return int(np.prod(self.shape))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> DataSpec:
    return cls(
      name=d["name"],
      kind=d["kind"],
      shape=tuple(d["shape"]),
      num_classes=int(d["num_classes"]),
      alphabet=d.get("alphabet"),
      sample_rate=d.get("sample_rate"),
      bits=d.get("bits"),
    )

  @classmethod
  def of_dataset(cls, dataset) -> DataSpec:
    return cls(
      name=dataset.name,
      kind=dataset.kind,
      shape=tuple(dataset.shape),
      num_classes=int(dataset.num_classes),
      alphabet=dataset.alphabet,
      sample_rate=getattr(dataset, "sample_rate", None),
      bits=getattr(dataset, "bits", None),
    )


# Data sets whose items a config fixes without reading them (tfds sets that need preparing, large downloads,
# audio cut to the configured length), so paper-sized configs build without the data: AOT memory reports,
# throughput benchmarks, tests.
_IMAGE_SETS = {"cifar10": ((32, 32, 3), 256), "mnist": ((28, 28, 1), 256)}
_AUDIO_SOURCES = ("sc09", "fsdd", "wav_folder")


def spec_without_data(config) -> DataSpec | None:
  """The DataSpec of config.data when the config alone determines it, else None (load the data instead)."""
  dc = config.data
  name = dc.name
  if name in _IMAGE_SETS:
    shape, k = _IMAGE_SETS[name]
    return DataSpec(name, "image", shape, k)
  if name == "text8":
    return DataSpec(name, "text", (int(dc.seq_len),), len(TEXT8_ALPHABET), TEXT8_ALPHABET)
  if name in _AUDIO_SOURCES:
    rate, bits = int(dc.get("sample_rate", SAMPLE_RATE)), int(dc.get("bits", PCM_BITS))
    return DataSpec(name, "audio", (int(dc.get("length", rate)),), 1 << bits, None, rate, bits)
  return None


def data_spec(config) -> DataSpec:
  """The DataSpec of config.data: from the config alone when it determines it, else from the (local) data."""
  spec = spec_without_data(config)
  if spec is None:  # local files (digits, text files, npz): cheap to read for their shape
    spec = DataSpec.of_dataset(data.load(config.data))
  return spec


def make_apply_fn(net: nn.Module) -> Callable[..., jax.Array]:
  """Adapts a Flax module to the plain apply function the ARDM math takes."""

  def apply_fn(params, x_in, known, t, train, key):
    rngs = {"dropout": key} if (train and key is not None) else None
    return net.apply({"params": params}, x_in, known, t, train=train, rngs=rngs)

  return apply_fn


def learning_rate_schedule(optim_cfg: Any, num_train_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then constant or cosine decay; with warmup_steps=0 the first step
  already trains at the full rate (the official CIFAR-10 and SC09 schedules)."""
  warmup = int(optim_cfg.warmup_steps)
  lr = float(optim_cfg.learning_rate)
  if warmup < 0:
    raise ValueError(f"optim.warmup_steps must be >= 0, got {warmup}")
  if optim_cfg.schedule == "constant":
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  if optim_cfg.schedule == "cosine":
    if warmup == 0:
      return optax.cosine_decay_schedule(lr, max(num_train_steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_train_steps, warmup + 1))
  raise ValueError(f"unknown optim.schedule {optim_cfg.schedule!r}; use 'constant' or 'cosine'")


def make_optimizer(optim_cfg: Any, num_train_steps: int) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(optim_cfg, num_train_steps)
  return optax.chain(
    optax.clip_by_global_norm(float(optim_cfg.clip_norm)),
    optax.adamw(schedule, b1=float(optim_cfg.b1), b2=float(optim_cfg.b2), weight_decay=float(optim_cfg.weight_decay)),
  )


@dataclasses.dataclass
class Setup:
  """Everything built from a config that train/eval/sample share."""

  config: Any
  spec: DataSpec
  # The model (objective.build): an upscale.Upscale (stages, parametrisation, output distribution) for ARDMs,
  # or a baselines.ARM / baselines.D3PMAbsorbing.
  objective: Any
  mesh: Mesh
  rules: Any
  net: nn.Module
  apply_fn: Callable[..., jax.Array]
  tx: optax.GradientTransformation
  abstract_state: Any
  state_shardings: Any

  def context(self):
    """Mesh and logical-axis rules for tracing: the nets' activation constraints only bind inside it."""
    return _mesh_context(self.mesh, self.rules)

  def init_state(self, seed: int) -> TrainState:
    """Creates the state directly in its sharded layout (never whole on one host)."""
    create = _state_creator(self.net, self.tx, self.spec, self.objective)
    with self.context():
      return jax.jit(lambda key: nn.unbox(create(key)), out_shardings=self.state_shardings)(jax.random.PRNGKey(seed))


@contextlib.contextmanager
def _mesh_context(mesh: Mesh, rules):
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _state_creator(net: nn.Module, tx: optax.GradientTransformation, spec: DataSpec, model: Any):
  lt_size = model.num_net_steps(spec.num_steps)

  def create(key):
    key_params, key_dropout = jax.random.split(key)
    x = jnp.zeros((1,) + spec.shape, jnp.int32)
    known = jnp.zeros((1,) + spec.shape, bool)
    t = jnp.zeros((1,), jnp.int32)
    params = net.init({"params": key_params, "dropout": key_dropout}, x, known, t, train=False)["params"]
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=params,
      opt_state=tx.init(params),
      lt_mean=jnp.zeros((lt_size,), jnp.float32),
      lt_count=jnp.zeros((lt_size,), jnp.float32),
    )

  return create


def zero1_enabled(config: Any) -> bool:
  """config.mesh.zero1 (absent in configs written before the switch existed: off)."""
  return bool(config.mesh.get("zero1", False))


def zero1_shardings(shardings: TrainState, abstract_state: TrainState) -> TrainState:
  """ZeRO-1: the optimizer state and the EMA parameters split over the `data` axis (see sharding.split_over_axis);
  the parameters, step and L_t tracker keep their layout. The train step is compiled with these shardings, so
  XLA's partitioner updates each shard locally and gathers the new parameters; the result is the same."""
  return shardings.replace(
    opt_state=sharding.shard_over_data(shardings.opt_state, abstract_state.opt_state),
    ema_params=sharding.shard_over_data(shardings.ema_params, abstract_state.ema_params),
  )


def build_setup(config: Any, spec: DataSpec, devices=None, mesh_sizes: dict[str, int] | None = None) -> Setup:
  """Everything a run or a job builds from `config`: mesh, model spec, network, optimizer and the abstract state
  with its shardings (traced with jax.eval_shape: nothing is allocated).

  Args:
    config: the experiment config.
    spec: the data's shape and classes.
    devices: the mesh's devices (default all).
    mesh_sizes: sizes {data, fsdp, tensor} instead of config.mesh's (a job laying a trained model out on the
      devices it has, sharding.mesh_for_devices); config.mesh.zero1 still applies.

  Returns:
    The Setup.
  """
  mesh = sharding.make_mesh(config.mesh if mesh_sizes is None else mesh_sizes, devices)
  rules = sharding.logical_rules(config.get("sharding_rules"))
  model = objective.build(config.get("ardm"), spec.num_classes, config.model)
  net = build_network(
    config.model,
    spec.shape,
    spec.num_classes,
    num_outputs=model.num_outputs,
    num_input_classes=model.num_input_classes,
    num_steps=model.num_net_steps(spec.num_steps),
    num_stages=model.num_stages,
  )
  tx = make_optimizer(config.optim, int(config.train.num_steps))
  create = _state_creator(net, tx, spec, model)
  with _mesh_context(mesh, rules):
    # An abstract key: nothing runs eagerly, so this also works for compile-only (AOT) devices.
    abstract_boxed = jax.eval_shape(create, jax.ShapeDtypeStruct((2,), jnp.uint32))
    specs = nn.get_partition_spec(abstract_boxed)
    shardings = sharding.logical_to_shardings(specs, mesh, rules)
  abstract_state = nn.unbox(abstract_boxed)
  if zero1_enabled(config):
    shardings = zero1_shardings(shardings, abstract_state)
  return Setup(
    config=config,
    spec=spec,
    objective=model,
    mesh=mesh,
    rules=rules,
    net=net,
    apply_fn=make_apply_fn(net),
    tx=tx,
    abstract_state=abstract_state,
    state_shardings=shardings,
  )


def count_params(tree: Any) -> int:
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))
