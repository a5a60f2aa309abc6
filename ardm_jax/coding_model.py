"""A trained model as the coder's network: the Predictor `ardm_jax.coding` calls, the model fingerprint, the
encoder's and decoder's policies, the order search, and coding items with rate statistics.

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
import os
import time

import numpy as np

from ardm_jax import coding, entropy_models
from ardm_jax.file_items import KIND_FORMATS, PCM_BITS, decode_file_table

# Decoding refuses containers claiming more coded symbols (N * S * D) than this (2**27 = 43,690 CIFAR images,
# 134M characters): a corrupt item count must fail fast instead of allocating.
MAX_DECODE_SYMBOLS = 1 << 27
SEARCH_DATA_SEED = 20220201  # training items for the order search: a fixed draw, independent of training seeds


# --------------------------------------------------------------------------------------------------------------
# The model as a coding network


def model_fingerprint(model) -> str:
  """Hex SHA-256 over the config hash and every parameter leaf (path, dtype, shape, bytes) in tree order."""
  import jax  # pylint: disable=import-outside-toplevel

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


def symbols_for(objective):
  """The symbol model a model codes new files with (`objective`: its upscale.Upscale spec): binary splits for a
  logistic mixture over the data classes, tables of the slots otherwise."""
  from ardm_jax.distributions import DiscretisedLogisticMixture  # pylint: disable=import-outside-toplevel

  if _slots_are_classes(objective) and isinstance(objective.distribution, DiscretisedLogisticMixture):
    return entropy_models.MixtureSplits(objective.num_slots, objective.distribution.num_mixtures)
  return entropy_models.CategoricalTables(objective.num_slots)


def _slots_are_classes(objective) -> bool:
  """A plain data-parametrised model: its slots are the data classes, so its output distribution is coded."""
  return objective.parametrisation == "data" and objective.transitions.slots_are_classes


class Predictor:
  """The network call `coding` needs: the symbol model's parameters of the positions a policy step codes,
  float32 [N, n, W] (`self.symbols`, an `entropy_models` symbol model, says what they mean).

  For a plain OA-ARDM with a categorical output the network's K logits themselves (what files of the first
  release were coded with, so they still decode); with the logistic mixture of 16-bit audio its unpacked
  parameters (3 M numbers, coded by binary splits: no K-wide table ever exists), or, for files written before
  splits existed (`with_symbols('tables')`), its `coding_logits` over K; for an upscale ARDM the slot
  log-probabilities (`upscale.slot_log_probs`, -inf on empty slots) of stage t // D, over its C slots. Two
  jitted functions run per batch: the network (compiled once per batch size) and the parameters of the gathered
  positions (compiled once per power-of-two bucket of n), so only [B, n, W] comes back from the device, never
  [B, D, K]. Items are fed in fixed batches of min(N, max_batch) rows (the short last one padded) on the one
  device of `coding_devices`, so encoder and decoder run the same computation whatever the machine's device
  count. `calls` counts network evaluations.
  """

  positions_only = True

  def __init__(self, model, max_batch: int):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

    from ardm_jax import upscale  # pylint: disable=import-outside-toplevel
    from ardm_jax.distributions import Categorical  # pylint: disable=import-outside-toplevel

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
      return upscale.slot_log_probs(spec, out, coarse, jnp.full((B,), stage, jnp.int32))

    self._tables = jax.jit(tables, static_argnums=4)

  def with_symbols(self, name: str) -> Predictor:
    """This predictor (sharing its compiled functions) for the scheme `name` a file names."""
    if name == self.symbols.name:
      return self
    if name != "tables" or self.symbols.name != "splits":
      raise coding.ContainerError(
        f"coding scheme mismatch: the file was coded with {name}, this model codes "
        f"with {self.symbols.name}; load the model that made it"
      )
    legacy = copy.copy(self)
    legacy.symbols = entropy_models.CategoricalTables(self.symbols.num_classes)
    return legacy

  def __call__(self, x_NxD: np.ndarray, known_NxD: np.ndarray, t: int, pos_n: np.ndarray) -> np.ndarray:
    return self.dispatch(x_NxD, known_NxD, t, pos_n)()

  def dispatch(self, x_NxD: np.ndarray, known_NxD: np.ndarray, t: int, pos_n: np.ndarray):
    """Starts the device work of one policy step and returns a function that waits for its parameters [N, n, W]:
    the encoder starts step k + 1 before it codes step k, so the host codes while the device computes."""
    from ardm_jax import sharding  # pylint: disable=import-outside-toplevel

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
  """A trained model (EMA parameters) ready to code: fingerprint and network call computed once."""

  model: object
  fingerprint: str
  predictor: Predictor

  @property
  def spec(self):
    return self.model.spec

  @property
  def objective(self):
    """The upscale.Upscale spec: stages, parametrisation, output distribution."""
    return self.model.setup.objective

  @property
  def num_stages(self) -> int:
    return self.objective.num_stages

  @property
  def workdir(self) -> str:
    return self.model.workdir


def coding_devices() -> list:
  """The devices the coder's network runs on: the first local one (see Determinism above)."""
  import jax  # pylint: disable=import-outside-toplevel

  return jax.local_devices()[:1]


def open_coding_model(workdir: str, step: int | None = None) -> CodingModel:
  from ardm_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel

  return coding_model_for(workdir_lib.open_workdir(workdir, use_ema=True, step=step, devices=coding_devices()))


def coding_model_for(model) -> CodingModel:
  """A trained model (of a workdir or a model folder, see ardm_jax/model_dir.py) opened on `coding_devices()`,
  ready to code."""
  from ardm_jax import objective  # pylint: disable=import-outside-toplevel

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


# --------------------------------------------------------------------------------------------------------------
# Policies and orders


def encoder_policy(
  cm: CodingModel, budget: int | None, naive: bool = False, policy_file: str | None = None, split: str = "optimal"
) -> tuple[np.ndarray, str]:
  """(global steps, label): one call per variable (and stage) without a budget or with budget S * D, else the
  DP policy (the policy file's, the total divided over the stages by `split`: 'optimal' or 'equal') or the
  naive one (equal split, evenly spaced)."""
  from ardm_jax import sample, upscale  # pylint: disable=import-outside-toplevel

  S, D = cm.num_stages, cm.spec.num_steps
  if budget is None or budget == S * D:
    return upscale.sequential_policy(S, D).astype(np.int64), "one call per variable" + (
      f" in each of {S} stages" if S > 1 else ""
    )
  steps = np.asarray(sample.choose_policy(cm.model, budget, naive, policy_file, split=split), np.int64)
  coding.policy_hash(steps, D, S)  # a malformed policy fails here, before any network call
  if len(steps) != budget:
    raise ValueError(
      f"the policy for --budget {budget} has {len(steps)} steps; rebuild the policy file with "
      f"{cm.model.policy_command(budget)}"
    )
  return steps, ("naive" if naive else "DP-optimal" + (", equal split" if S > 1 and split == "equal" else ""))


def decoder_policy(cm: CodingModel, container: coding.Container, policy_file: str | None = None) -> np.ndarray:
  """The global policy a container was coded with, found among the ones this workdir can make (checked by hash):
  one call per step (budget S * D), the naive policy, or the policy file's (either budget split)."""
  from ardm_jax import policy as policy_lib  # pylint: disable=import-outside-toplevel
  from ardm_jax import upscale

  S, D, budget = container.num_stages, container.D, container.budget
  path = policy_file or os.path.join(cm.workdir, "policy.json")
  candidates = []
  if budget == S * D:
    candidates.append(upscale.sequential_policy(S, D))
  else:
    if budget >= S:
      candidates.append(policy_lib.naive_global_policy(S, D, budget))
    if os.path.isfile(path):
      pf = policy_lib.load_policy_file(path)  # a malformed file is reported as such
      for split in policy_lib.BUDGET_SPLIT_KEYS:
        try:
          candidates.append(policy_lib.global_policy(pf, budget, split))
        except ValueError:
          pass  # no policy for this budget and split in the file
  for steps in candidates:
    try:
      if coding.policy_hash(steps, D, S) == container.policy_hash:
        return np.asarray(steps, np.int64)
    except ValueError:
      continue  # a policy file of another model's stage layout
  if budget == S * D:
    raise coding.ContainerError(
      f"policy mismatch: a budget-{budget} policy can only be one call per variable, but "
      "the stored policy hash differs; the file is corrupt"
    )
  raise coding.ContainerError(
    f"policy mismatch: the file was coded with a budget-{budget} policy (hash "
    f"{container.policy_hash.hex()}) that is neither the naive one nor the DP policy in "
    f"{path}; decode with the policy file used for compression (--policy FILE)"
  )


def search_order(
  cm: CodingModel, steps: np.ndarray, num_orders: int, num_items: int = 64, base_seed: int = 0
) -> tuple[int, list[float]]:
  """Tries the orders of seeds base_seed .. base_seed + num_orders - 1 on training items; returns the best.

  Each order (all stages' orders, `coding.stage_orders`) is scored by the exact policy log-likelihood (one
  network call per policy step) of `num_items` training items, in bits/dim; the seed with the lowest mean wins
  (the paper tries 5 orders).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from ardm_jax import data, sharding, upscale  # pylint: disable=import-outside-toplevel

  if num_orders < 1 or num_items < 1:
    raise ValueError(f"--search-orders and --search-items must be >= 1, got {num_orders} and {num_items}")
  spec, model, objective = cm.spec, cm.model, cm.objective
  items = data.load(model.config.data).train_batch(0, num_items, SEARCH_DATA_SEED)
  S, D = objective.num_stages, spec.num_steps
  B = min(num_items, cm.predictor.max_batch)
  apply_fn = model.setup.apply_fn
  fn = jax.jit(
    lambda params, x, sigma_BxSxD, policy_P: upscale.policy_log_likelihood(
      apply_fn, params, x, sigma_BxSxD, policy_P, spec=objective
    )
  )
  policy_P = jnp.asarray(steps, jnp.int32)
  scores = []
  for seed in range(base_seed, base_seed + num_orders):
    sigma_BxSxD = np.broadcast_to(coding.stage_orders(seed, D, S), (B, S, D))
    nats = 0.0
    for lo in range(0, num_items, B):
      x = items[lo : lo + B]
      n = len(x)
      with model.setup.context():
        ll_B = sharding.to_host(
          fn(
            model.params,
            sharding.place_rows(sharding.pad_rows(x, B), model.setup.mesh),
            sharding.place_rows(sigma_BxSxD, model.setup.mesh),
            policy_P,
          )
        )
      nats -= float(np.sum(ll_B[:n], dtype=np.float64))
    scores.append(nats / (num_items * D * np.log(2.0)))
  return base_seed + int(np.argmin(scores)), scores


# --------------------------------------------------------------------------------------------------------------
# Coding items


@dataclasses.dataclass
class CodingStats:
  mode: str
  num_items: int
  item_shape: tuple
  policy_steps: int
  network_calls: int
  seconds: float
  total_bytes: int
  header_bytes: int  # magic .. order seed (+ file table): paid once per container
  payload_bytes: int  # the ANS streams alone
  model_nll_bits: float | None = None  # sum of -log2 p under the network's float32 tables (encoder only)
  table_nll_bits: float | None = None  # the same under the quantised integer tables the coder uses
  item_payload_bytes: tuple = ()

  @property
  def dims(self) -> int:
    return self.num_items * int(np.prod(self.item_shape))

  @property
  def record_bytes(self) -> int:  # CRC + length varint per stream
    return self.total_bytes - self.header_bytes - self.payload_bytes

  def bpd(self, num_bits: float) -> float:
    return num_bits / self.dims


class _NllMeter:
  """Wraps the predictor on the encoder side to add up the model's and the coder's -log2 p of the items."""

  positions_only = True

  def __init__(self, predictor: Predictor, x_NxD: np.ndarray, slots_SxK: np.ndarray):
    self.predictor, self.x, self.slots = predictor, x_NxD, np.asarray(slots_SxK)
    self.model_bits = np.zeros(len(x_NxD))
    self.table_bits = np.zeros(len(x_NxD))

  def __call__(self, x_in, known, t, pos_n):
    return self.dispatch(x_in, known, t, pos_n)()

  def dispatch(self, x_in, known, t, pos_n):
    if hasattr(self.predictor, "dispatch"):
      pending = self.predictor.dispatch(x_in, known, t, pos_n)
    else:  # a plain callable: called when the result is asked for
      pending = lambda: self.predictor(x_in, known, t, pos_n)  # noqa: E731

    def result():
      params = pending()
      sym = self.slots[t // self.x.shape[1]][self.x[:, pos_n]]
      self.model_bits += self.predictor.symbols.model_bits(params, sym).sum(axis=1)
      self.table_bits += self.predictor.symbols.code_bits(params, sym).sum(axis=1)
      return params

    return result


def compress_items(
  cm: CodingModel, items: np.ndarray, *, mode: str, steps, order_seed: int, file_table: bytes = b""
) -> tuple[bytes, CodingStats]:
  """Codes items [N, *model shape] into one container with len(steps) network calls (global policy); also
  measures the model's NLL for the same orders and policy."""
  spec, transitions = cm.spec, cm.objective.transitions
  items = np.asarray(items)
  if items.shape[1:] != spec.shape or len(items) < 1:
    raise ValueError(f"items must have shape [N, *{spec.shape}] with N >= 1, got {items.shape}")
  x_NxD = items.reshape(len(items), -1).astype(np.int32)
  meter = _NllMeter(cm.predictor, x_NxD, transitions.slots)
  calls, start = cm.predictor.calls, time.perf_counter()
  data = coding.compress(
    meter,
    items,
    mode=mode,
    fingerprint=cm.fingerprint,
    kind=spec.kind,
    policy=steps,
    order_seed=order_seed,
    num_classes=spec.num_classes,
    file_table=file_table,
    stages=transitions,
    symbols=cm.predictor.symbols,
    compact=True,
  )
  seconds = time.perf_counter() - start
  c = coding.unpack_container(
    data, expected_fingerprint=cm.fingerprint, expected_shape=spec.shape, num_stages=cm.num_stages
  )
  stats = CodingStats(
    mode=mode,
    num_items=len(items),
    item_shape=spec.shape,
    policy_steps=len(steps),
    network_calls=cm.predictor.calls - calls,
    seconds=seconds,
    total_bytes=len(data),
    header_bytes=len(c.header),
    payload_bytes=sum(len(p) for p in c.payloads),
    model_nll_bits=float(meter.model_bits.sum()),
    table_nll_bits=float(meter.table_bits.sum()),
    item_payload_bytes=tuple(len(p) for p in c.payloads),
  )
  return data, stats


def decompress_items(
  cm: CodingModel, data: bytes, *, policy_file: str | None = None, max_symbols: int = MAX_DECODE_SYMBOLS
) -> tuple[coding.Container, np.ndarray, CodingStats]:
  """Inverse of `compress_items`: (container, items [N, *shape], stats); any problem is a ContainerError."""
  spec, transitions = cm.spec, cm.objective.transitions
  c = coding.unpack_container(
    data,
    expected_fingerprint=cm.fingerprint,
    expected_shape=spec.shape,
    max_symbols=max_symbols,
    num_stages=cm.num_stages,
  )
  if c.kind != spec.kind:
    raise coding.ContainerError(f"the file holds {c.kind} data but the model codes {spec.kind}")
  coding.check_stages(c, cm.num_stages)
  predictor = cm.predictor.with_symbols(c.symbols)  # files written before splits existed use K-wide tables
  decode_file_table(c.file_table, spec, c.num_items)  # a corrupt table fails here, before any network call
  steps = coding.check_policy(c, decoder_policy(cm, c, policy_file))
  sigma = coding.stage_orders(c.order_seed, c.D, c.num_stages)
  calls, start = predictor.calls, time.perf_counter()
  decode = coding.decode_stream if c.mode == "dataset" else coding.decode_items
  x = decode(
    predictor,
    c.payloads[0] if c.mode == "dataset" else list(c.payloads),
    sigma,
    steps,
    c.num_items,
    c.D,
    spec.num_classes,
    transitions,
    predictor.symbols,
  )
  coding.check_crc(c, x, spec.num_classes)
  stats = CodingStats(
    mode=c.mode,
    num_items=c.num_items,
    item_shape=c.item_shape,
    policy_steps=len(steps),
    network_calls=predictor.calls - calls,
    seconds=time.perf_counter() - start,
    total_bytes=len(data),
    header_bytes=len(c.header),
    payload_bytes=sum(len(p) for p in c.payloads),
    item_payload_bytes=tuple(len(p) for p in c.payloads),
  )
  return c, x.reshape((c.num_items,) + c.item_shape), stats
