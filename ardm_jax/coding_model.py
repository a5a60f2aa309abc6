"""A trained model as the coder's network: the `Predictor` the coding walk calls, and the model fingerprint.

This is the one place where the network meets the coder (`ardm_jax.coding`, which knows no network): it opens a
trained model on one device, decides the symbol scheme its outputs are coded with, and turns one policy step
into one batched network call that returns only the coded positions' parameters.

Determinism
-----------
Encoder and decoder must see bit-identical tables. Both use the same jitted network function and table
function and feed them the items of a container in batches of min(N, config.train.eval_batch_size)
(N = items in the container, stored in its header), and only the real rows are coded; nothing about batching is
stored. The network runs on one device (`coding_devices`) whatever the machine has: the networks are row-wise
(no batch statistics), but XLA's float results for a row can still depend on the per-device batch shape (a
batch of 2 on one device and of 1 padded to 3 across three CPU devices round differently, and one rounding
changes a quantised table), so a file compressed on 1 device decodes on 3 only when both run the same
per-device batch (tested on CPU). The CRC-32 in the container turns any numerical mismatch (another device kind,
another XLA) into an error.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax import objective, sharding, upscale_spec
from ardm_jax import workdir as workdir_lib
from ardm_jax.coding.container import ContainerError
from ardm_jax.coding.entropy_models import CategoricalTables, MixtureSplits
from ardm_jax.distributions import Categorical, DiscretisedLogisticMixture
from ardm_jax.file_items import KIND_FORMATS, PCM_BITS


def model_fingerprint(model) -> str:
  """The model fingerprint a container stores (truncated) and checks.

  Args:
    model: a trained model with `config_hash` and `params`.

  Returns:
    Hex SHA-256 over the config hash and every parameter leaf (path, dtype, shape, bytes) in tree order.
  """

  h = hashlib.sha256(b"ardm-model")
  h.update(model.config_hash.encode())
  for path, leaf in jax.tree_util.tree_leaves_with_path(model.params):
    a = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode() + str(a.dtype).encode() + repr(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _bucket(n: int, D: int) -> int:
  """Positions are padded to a power of two (at most D), so the table function compiles O(log D) times."""
  return min(1 << max(0, n - 1).bit_length(), D)


def symbols_for(spec):
  """The symbol model a model codes new files with.

  Args:
    spec: the model's `upscale_spec.Upscale`.

  Returns:
    `MixtureSplits` for a logistic mixture over the data classes, else `CategoricalTables` over the slots.
  """

  if _slots_are_classes(spec) and isinstance(spec.distribution, DiscretisedLogisticMixture):
    return MixtureSplits(spec.num_slots, spec.distribution.num_mixtures)
  return CategoricalTables(spec.num_slots)


def _slots_are_classes(spec) -> bool:
  """A plain data-parametrised model: its slots are the data classes, so its output distribution is coded."""
  return spec.parametrisation == "data" and spec.transitions.slots_are_classes


class Predictor:
  """The network call `coding` needs: the symbol model's parameters of the positions a policy step codes,
  float32 [N, n, W] (`self.symbols`, an `entropy_models` symbol model, says what they mean).

  For a plain OA-ARDM with a categorical output the network's K logits themselves (what files of the first
  release were coded with, so they still decode); with the logistic mixture of 16-bit audio its unpacked
  parameters (3 M numbers, coded by binary splits: no K-wide table ever exists), or, for files written before
  splits existed (`with_symbols('tables')`), its `coding_logits` over K; for an upscale ARDM the slot
  log-probabilities (`upscale_spec.slot_log_probs`, -inf on empty slots) of stage t // D, over its C slots. Two
  jitted functions run per batch: the network (compiled once per batch size) and the parameters of the gathered
  positions (compiled once per power-of-two bucket of n), so only [B, n, W] comes back from the device, never
  [B, D, K]. Items are fed in fixed batches of min(N, max_batch) rows (the short last one padded) on the one
  device of `coding_devices`, so encoder and decoder run the same computation whatever the machine's device
  count. `calls` counts network evaluations.
  """

  positions_only = True

  def __init__(self, model, max_batch: int):

    apply_fn = model.setup.apply_fn
    spec = model.setup.objective
    D = model.spec.num_steps
    self.model = model
    self.max_batch = int(max_batch)
    self.calls = 0
    self.symbols = symbols_for(spec)
    self._apply = jax.jit(lambda params, x_in, known, t_B: apply_fn(params, x_in, known, t_B, False, None))
    slots_are_classes = _slots_are_classes(spec)
    raw_logits = slots_are_classes and isinstance(spec.distribution, Categorical)

    def tables(net_out, x_in, pos, stage, splits):
      B = net_out.shape[0]
      out = net_out.reshape(B, D, -1)[:, pos]
      if raw_logits:
        return out  # the coder's float64 softmax is exact on raw logits; a float32 log_softmax would round
      if splits:
        return jnp.concatenate(spec.distribution.unpack(out), axis=-1)
      if slots_are_classes:
        return spec.distribution.coding_logits(out)
      # Coded positions are unknown in this stage, so their input is their level-s (coarse) state.
      coarse = x_in.reshape(B, D)[:, pos]
      return upscale_spec.slot_log_probs(spec, out, coarse, jnp.full((B,), stage, jnp.int32))

    self._tables = jax.jit(tables, static_argnums=4)

  def with_symbols(self, name: str) -> Predictor:
    """This predictor (sharing its compiled functions) for the scheme `name` a file names.

    Raises:
      ContainerError: the model cannot code with that scheme.
    """
    if name == self.symbols.name:
      return self
    if name != "tables" or self.symbols.name != "splits":
      raise ContainerError(
        f"coding scheme mismatch: the file was coded with {name}, this model codes "
        f"with {self.symbols.name}; load the model that made it"
      )
    legacy = copy.copy(self)
    legacy.symbols = CategoricalTables(self.symbols.num_classes)
    return legacy

  def __call__(self, x_NxD: np.ndarray, known_NxD: np.ndarray, t: int, pos_n: np.ndarray) -> np.ndarray:
    return self.dispatch(x_NxD, known_NxD, t, pos_n)()

  def dispatch(self, x_NxD: np.ndarray, known_NxD: np.ndarray, t: int, pos_n: np.ndarray):
    """Starts the device work of one policy step; the encoder starts step k + 1 before it codes step k.

    Args:
      x_NxD: the walk's input states, int32 [N, D].
      known_NxD: the known mask, bool [N, D].
      t: the global policy step.
      pos_n: the positions this step codes, int [n].

    Returns:
      A function that waits for the parameters, float32 [N, n, W].
    """

    spec, mesh = self.model.spec, self.model.setup.mesh
    N, D = x_NxD.shape
    n = len(pos_n)
    B = min(N, self.max_batch)
    pos = np.concatenate([pos_n, np.repeat(pos_n[:1], _bucket(n, D) - n)]).astype(np.int32)
    pending = []
    for lo in range(0, N, B):
      x_b, known_b = x_NxD[lo : lo + B], known_NxD[lo : lo + B]
      rows = len(x_b)
      # The short last batch is padded to B rows first, so every call of a container has the same shape.
      x_b, known_b = sharding.pad_rows(x_b, B), sharding.pad_rows(known_b, B)
      with self.model.setup.context():
        x_in = sharding.place_rows(x_b.reshape((B,) + spec.shape).astype(np.int32), mesh)
        known = sharding.place_rows(known_b.reshape((B,) + spec.shape), mesh)
        t_B = sharding.place_rows(np.full((B,), t, np.int32), mesh)
        net_out = self._apply(self.model.params, x_in, known, t_B)  # asynchronous: returns before the device ends
        pending.append((lo, rows, self._tables(net_out, x_in, pos, np.int32(t // D), self.symbols.name == "splits")))
      self.calls += 1

    def result() -> np.ndarray:
      out = np.empty((N, n, self.symbols.width), np.float32)
      for lo, rows, table in pending:
        with self.model.setup.context():
          table = sharding.to_host(table)
        if table.dtype != np.float32:
          raise ValueError(f"the network returned {table.dtype} outputs; coding needs float32 tables")
        out[lo : lo + rows] = table[:rows, :n]
      return out

    return result


@dataclasses.dataclass
class CodingModel:
  """A trained model (EMA parameters) ready to code: fingerprint and network call computed once.

  Attributes:
    model: the opened model (`workdir.open_workdir` or a model folder).
    fingerprint: its `model_fingerprint`.
    predictor: its `Predictor`.
  """

  model: object
  fingerprint: str
  predictor: Predictor

  @property
  def spec(self):
    return self.model.spec

  @property
  def objective(self):
    """The upscale_spec.Upscale spec: stages, parametrisation, output distribution."""
    return self.model.setup.objective

  @property
  def num_stages(self) -> int:
    return self.objective.num_stages

  @property
  def workdir(self) -> str:
    return self.model.workdir


def coding_devices() -> list:
  """The devices the coder's network runs on: the first local one (see Determinism above)."""

  return jax.local_devices()[:1]


def open_coding_model(workdir: str, step: int | None = None) -> CodingModel:
  """Opens a workdir's EMA parameters (the last checkpoint, or `step`) on `coding_devices()`, ready to code."""

  return coding_model_for(workdir_lib.open_workdir(workdir, use_ema=True, step=step, devices=coding_devices()))


def coding_model_for(model) -> CodingModel:
  """Wraps a trained model for coding.

  Args:
    model: a trained model (of a workdir or a model folder, see ardm_jax/model_dir.py) opened on
      `coding_devices()`.

  Returns:
    The `CodingModel`.

  Raises:
    ValueError: the model is on more than one device, is not an ARDM, or codes data compression does not support.
  """

  if model.setup.mesh.size != 1:
    raise ValueError(
      f"the coder runs its network on one device (files then decode on any device count); open the "
      f"model with devices=coding_devices(), not on {model.setup.mesh.size}"
    )
  objective.require_ardm(model.setup.objective, "compression")
  _check_codable(model.spec, model.workdir)
  return CodingModel(
    model=model,
    fingerprint=model_fingerprint(model),
    predictor=Predictor(model, int(model.config.train.eval_batch_size)),
  )


def _check_codable(spec, workdir: str) -> None:
  if spec.kind not in KIND_FORMATS:
    raise ValueError(
      f"the model in {workdir} codes {spec.kind!r} data; compression supports image, text and audio models"
    )
  if spec.kind == "audio" and (not spec.sample_rate or spec.num_classes != 1 << (spec.bits or PCM_BITS)):
    raise ValueError(
      f"the audio model in {workdir} has no sample rate or a K that is not 2**bits in its data "
      "spec; retrain it with this version of ardm_jax"
    )
