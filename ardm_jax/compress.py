"""Lossless compression with a trained ARDM: the `ardm compress` / `ardm decompress` jobs.

This module turns files into items of the model's shape and back, builds the network call that
`ardm_jax.coding` codes with, picks the order and the policy, and reports rates. The entropy coder and the
container are in `coding.py`; the file table this module stores in the container is described below and in
the README (section "Container format").

Models: every model a config trains (`model.setup.objective`, see ardm_jax/objective.py): plain OA-ARDMs with a
categorical or a discretised logistic mixture output (16-bit audio, K = 65,536), and upscale ARDMs (S stages,
coarse to fine, 'data' or 'direct' parametrisation), coded stage by stage over a global policy.

Inputs (per file)
-----------------
  image models  .png (8-bit grayscale or RGB, values on the model's K levels) or .npy (integer class values,
                [H, W], [H, W, C] or a stack [N, H, W, C]); any height and width: an image is padded at the
                bottom and right by repeating its last row / column to a multiple of the model's height and
                width and cut into tiles of the model's shape, row-major.
  text models   .txt in UTF-8 on the model's alphabet (text8: ' ' and 'a'..'z'); one trailing newline is
                allowed and restored; the text is padded with the alphabet's first symbol to a multiple of the
                model's length and cut into tiles.
  audio models  .wav, 16-bit PCM mono at the model's sample rate; any length: the clip is padded with silence
                (PCM 0) to a multiple of the model's length L and cut into L-sample tiles; decompression writes
                a 16-bit mono .wav at the same rate and the original length. A model with bits < 16 codes the
                bits most significant bits, so it takes only clips whose low 16 - bits bits are zero (exactness).

Determinism
-----------
Encoder and decoder must see bit-identical tables. Both use the same jitted network function and table
function and feed them the items of a container in batches of min(N, config.train.eval_batch_size)
(N = items in the container, stored in its header); each batch is padded by repeating its first row to divide
the devices (`sharding.place_rows`), and only the real rows are coded; nothing about batching is stored. The
padding depends on the device count, but the networks are row-wise (no batch statistics), so a row's table does
not depend on its batch: a file compressed on 1 device decodes on 3 (tested on CPU). The CRC-32 in the container
turns any numerical mismatch (another device kind, another XLA) into an error.

File table (stored only when needed; `coding` keeps it as opaque bytes in the header, covered by the CRCs)
----------------------------------------------------------------------------------------------------------
Absent: every item is one file, a PNG of exactly the model's shape (image models), exactly the model's
length of text without a newline (text models) or a WAV of exactly L samples (audio models); decompression
names them item_0000.png / .txt / .wav ...
Present:

    num_files      varint    F >= 1
    per file:
      tag          1 byte    bits 0-1 format (0 PNG, 1 NPY, 2 TXT, 3 WAV); bit 2 a name follows; bit 3 (TXT)
                             the text ended with a newline; bits 4-7 zero
      PNG          varint H, varint W                       original size (channels are the model's)
      NPY          1 byte dtype code, varint ndim (2..4), varint dims   (codes: u1 i1 u2 i2 u4 i4 u8 i8)
      TXT          varint number of characters
      WAV          varint number of samples (the rate is the model's)
      name         varint byte length + UTF-8 (a plain file name, no directories), only with tag bit 2

The tiles per file follow from the sizes, and their sum must equal the container's item count.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import time
import wave

import numpy as np
from PIL import Image

from ardm_jax import coding, entropy_models
from ardm_jax.policy import BUDGET_SPLIT_KEYS  # NumPy only: cheap for --help

# jax, the workdir and the data sources are imported inside the jobs: the CLI builds its parser from this module
# and should not pay for a JAX import to print --help.

FORMATS = ("png", "npy", "txt", "wav")
KIND_FORMATS = {"image": ("png", "npy"), "text": ("txt",), "audio": ("wav",)}
NPY_DTYPES = ("|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8")
MAX_NAME_BYTES = 255
PCM_BITS = 16
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
  if objective.parametrisation == "data" and objective.transitions.slots_are_classes:
    return entropy_models.symbol_model(objective.distribution, objective.num_slots)
  return entropy_models.CategoricalTables(objective.num_slots)


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
  [B, D, K]. Items are fed in fixed batches of min(N, max_batch) rows, padded to divide the devices, so encoder
  and decoder run the same per-row computation. `calls` counts network evaluations.
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
    slots_are_classes = spec.parametrisation == "data" and spec.transitions.slots_are_classes
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

  def with_symbols(self, name: str) -> "Predictor":
    """This predictor (sharing its compiled functions) for the scheme `name` a file names."""
    if name == self.symbols.name:
      return self
    if name != "tables" or self.symbols.name != "splits":
      raise coding.ContainerError(f"coding scheme mismatch: the file was coded with {name}, this model codes "
                                  f"with {self.symbols.name}; load the model that made it")
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
      x_b, known_b = x_NxD[lo:lo + B], known_NxD[lo:lo + B]
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
        out[lo:lo + rows] = table[:rows, :n]
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


def open_coding_model(workdir: str, step: int | None = None) -> CodingModel:
  from ardm_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from ardm_jax import objective  # pylint: disable=import-outside-toplevel
  model = workdir_lib.open_workdir(workdir, use_ema=True, step=step)
  objective.require_ardm(model.setup.objective, "compression")
  _check_codable(model.spec, workdir)
  return CodingModel(model=model, fingerprint=model_fingerprint(model),
                     predictor=Predictor(model, int(model.config.train.eval_batch_size)))


def _check_codable(spec, workdir: str) -> None:
  if spec.kind not in KIND_FORMATS:
    raise ValueError(f"the model in {workdir} codes {spec.kind!r} data; compression supports image, text and "
                     "audio models")
  if spec.kind == "audio" and (not spec.sample_rate or spec.num_classes != 1 << (spec.bits or PCM_BITS)):
    raise ValueError(f"the audio model in {workdir} has no sample rate or a K that is not 2**bits in its data "
                     "spec; retrain it with this version of ardm_jax")


# --------------------------------------------------------------------------------------------------------------
# Policies and orders


def encoder_policy(cm: CodingModel, budget: int | None, naive: bool = False,
                   policy_file: str | None = None, split: str = "optimal") -> tuple[np.ndarray, str]:
  """(global steps, label): one call per variable (and stage) without a budget or with budget S * D, else the
  DP policy (the policy file's, the total divided over the stages by `split`: 'optimal' or 'equal') or the
  naive one (equal split, evenly spaced)."""
  from ardm_jax import sample, upscale  # pylint: disable=import-outside-toplevel
  S, D = cm.num_stages, cm.spec.num_steps
  if budget is None or budget == S * D:
    return upscale.sequential_policy(S, D).astype(np.int64), "one call per variable" + (
        f" in each of {S} stages" if S > 1 else "")
  steps = np.asarray(sample.choose_policy(cm.model, budget, naive, policy_file, split=split), np.int64)
  coding.policy_hash(steps, D, S)  # a malformed policy fails here, before any network call
  if len(steps) != budget:
    raise ValueError(f"the policy for --budget {budget} has {len(steps)} steps; rebuild the policy file with "
                     f"`ardm policy --workdir {cm.workdir} --budgets {budget}`")
  return steps, ("naive" if naive else "DP-optimal" + (", equal split" if S > 1 and split == "equal" else ""))


def decoder_policy(cm: CodingModel, container: coding.Container, policy_file: str | None = None) -> np.ndarray:
  """The global policy a container was coded with, found among the ones this workdir can make (checked by hash):
  one call per step (budget S * D), the naive policy, or the policy file's (either budget split)."""
  from ardm_jax import policy as policy_lib, upscale  # pylint: disable=import-outside-toplevel
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
    raise coding.ContainerError(f"policy mismatch: a budget-{budget} policy can only be one call per variable, but "
                                "the stored policy hash differs; the file is corrupt")
  raise coding.ContainerError(f"policy mismatch: the file was coded with a budget-{budget} policy (hash "
                              f"{container.policy_hash.hex()}) that is neither the naive one nor the DP policy in "
                              f"{path}; decode with the policy file used for compression (--policy FILE)")


def search_order(cm: CodingModel, steps: np.ndarray, num_orders: int, num_items: int = 64,
                 base_seed: int = 0) -> tuple[int, list[float]]:
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
  fn = jax.jit(lambda params, x, sigma_BxSxD, policy_P: upscale.policy_log_likelihood(
      apply_fn, params, x, sigma_BxSxD, policy_P, spec=objective))
  policy_P = jnp.asarray(steps, jnp.int32)
  scores = []
  for seed in range(base_seed, base_seed + num_orders):
    sigma_BxSxD = np.broadcast_to(coding.stage_orders(seed, D, S), (B, S, D))
    nats = 0.0
    for lo in range(0, num_items, B):
      x = items[lo:lo + B]
      n = len(x)
      with model.setup.context():
        ll_B = sharding.to_host(fn(model.params, sharding.place_rows(sharding.pad_rows(x, B), model.setup.mesh),
                                   sharding.place_rows(sigma_BxSxD, model.setup.mesh), policy_P))
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
  header_bytes: int            # magic .. order seed (+ file table): paid once per container
  payload_bytes: int           # the ANS streams alone
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
    pending = self.predictor.dispatch(x_in, known, t, pos_n)

    def result():
      params = pending()
      sym = self.slots[t // self.x.shape[1]][self.x[:, pos_n]]
      self.model_bits += self.predictor.symbols.model_bits(params, sym).sum(axis=1)
      self.table_bits += self.predictor.symbols.code_bits(params, sym).sum(axis=1)
      return params
    return result


def compress_items(cm: CodingModel, items: np.ndarray, *, mode: str, steps, order_seed: int,
                   file_table: bytes = b"") -> tuple[bytes, CodingStats]:
  """Codes items [N, *model shape] into one container with len(steps) network calls (global policy); also
  measures the model's NLL for the same orders and policy."""
  spec, transitions = cm.spec, cm.objective.transitions
  items = np.asarray(items)
  if items.shape[1:] != spec.shape or len(items) < 1:
    raise ValueError(f"items must have shape [N, *{spec.shape}] with N >= 1, got {items.shape}")
  x_NxD = items.reshape(len(items), -1).astype(np.int32)
  meter = _NllMeter(cm.predictor, x_NxD, transitions.slots)
  calls, start = cm.predictor.calls, time.perf_counter()
  data = coding.compress(meter, items, mode=mode, fingerprint=cm.fingerprint, kind=spec.kind, policy=steps,
                         order_seed=order_seed, num_classes=spec.num_classes, file_table=file_table,
                         stages=transitions, symbols=cm.predictor.symbols, compact=True)
  seconds = time.perf_counter() - start
  c = coding.unpack_container(data, expected_fingerprint=cm.fingerprint, expected_shape=spec.shape,
                              num_stages=cm.num_stages)
  stats = CodingStats(mode=mode, num_items=len(items), item_shape=spec.shape, policy_steps=len(steps),
                      network_calls=cm.predictor.calls - calls, seconds=seconds, total_bytes=len(data),
                      header_bytes=len(c.header), payload_bytes=sum(len(p) for p in c.payloads),
                      model_nll_bits=float(meter.model_bits.sum()), table_nll_bits=float(meter.table_bits.sum()),
                      item_payload_bytes=tuple(len(p) for p in c.payloads))
  return data, stats


def decompress_items(cm: CodingModel, data: bytes, *, policy_file: str | None = None,
                     max_symbols: int = MAX_DECODE_SYMBOLS) -> tuple[coding.Container, np.ndarray, CodingStats]:
  """Inverse of `compress_items`: (container, items [N, *shape], stats); any problem is a ContainerError."""
  spec, transitions = cm.spec, cm.objective.transitions
  c = coding.unpack_container(data, expected_fingerprint=cm.fingerprint, expected_shape=spec.shape,
                              max_symbols=max_symbols, num_stages=cm.num_stages)
  if c.kind != spec.kind:
    raise coding.ContainerError(f"the file holds {c.kind} data but the model codes {spec.kind}")
  coding.check_stages(c, cm.num_stages)
  predictor = cm.predictor.with_symbols(c.symbols)  # files written before splits existed use K-wide tables
  decode_file_table(c.file_table, spec, c.num_items)  # a corrupt table fails here, before any network call
  steps = coding.check_policy(c, decoder_policy(cm, c, policy_file))
  sigma = coding.stage_orders(c.order_seed, c.D, c.num_stages)
  calls, start = predictor.calls, time.perf_counter()
  decode = coding.decode_stream if c.mode == "dataset" else coding.decode_items
  x = decode(predictor, c.payloads[0] if c.mode == "dataset" else list(c.payloads), sigma, steps, c.num_items, c.D,
             spec.num_classes, transitions, predictor.symbols)
  coding.check_crc(c, x, spec.num_classes)
  stats = CodingStats(mode=c.mode, num_items=c.num_items, item_shape=c.item_shape, policy_steps=len(steps),
                      network_calls=predictor.calls - calls, seconds=time.perf_counter() - start,
                      total_bytes=len(data), header_bytes=len(c.header),
                      payload_bytes=sum(len(p) for p in c.payloads),
                      item_payload_bytes=tuple(len(p) for p in c.payloads))
  return c, x.reshape((c.num_items,) + c.item_shape), stats


# --------------------------------------------------------------------------------------------------------------
# Files <-> items


@dataclasses.dataclass
class FileEntry:
  """One input/output file and how its items tile it."""
  fmt: str                 # 'png' | 'npy' | 'txt' | 'wav'
  size: tuple              # png: (H, W); npy: the array shape; txt: (num_chars,); wav: (num_samples,)
  dtype: str | None = None  # npy only, one of NPY_DTYPES
  newline: bool = False    # txt only
  name: str | None = None
  data: np.ndarray | None = None  # png [H, W, C] / npy as stored / txt ids [num_chars] / wav classes [samples]

  def num_items(self, shape: tuple) -> int:
    if self.fmt in ("txt", "wav"):
      return max(1, -(-self.size[0] // shape[0]))
    h, w = shape[0], shape[1]
    if self.fmt == "png":
      H, W = self.size
      stack = 1
    else:
      stack = self.size[0] if len(self.size) == 4 else 1
      H, W = self.size[-3:-1] if len(self.size) == 4 else self.size[:2]
    return stack * -(-H // h) * -(-W // w)

  def is_default(self, shape: tuple) -> bool:
    if self.name is not None:
      return False
    if self.fmt == "png":
      return self.size == tuple(shape[:2]) and shape[-1] in (1, 3)
    return self.fmt in ("txt", "wav") and self.size == tuple(shape) and not self.newline


def _tiles(image_HxWxC: np.ndarray, h: int, w: int) -> np.ndarray:
  """Pads bottom/right by edge replication to multiples of (h, w); tiles [nh * nw, h, w, C], row-major."""
  H, W, C = image_HxWxC.shape
  nh, nw = -(-H // h), -(-W // w)
  padded = np.pad(image_HxWxC, ((0, nh * h - H), (0, nw * w - W), (0, 0)), mode="edge")
  return padded.reshape(nh, h, nw, w, C).transpose(0, 2, 1, 3, 4).reshape(nh * nw, h, w, C)


def _untile(tiles: np.ndarray, H: int, W: int) -> np.ndarray:
  _, h, w, C = tiles.shape
  nh, nw = -(-H // h), -(-W // w)
  return tiles.reshape(nh, nw, h, w, C).transpose(0, 2, 1, 3, 4).reshape(nh * h, nw * w, C)[:H, :W]


def _pcm_shift(spec) -> int:
  return PCM_BITS - (spec.bits or PCM_BITS)


def _to_items(entry: FileEntry, spec) -> np.ndarray:
  shape = spec.shape
  if entry.fmt in ("txt", "wav"):
    L = shape[0]
    n = entry.num_items(shape)
    # Padding: the alphabet's first symbol, or silence (PCM 0 = class 2**(bits-1)); cropped on decompression.
    ids = np.full(n * L, 0 if entry.fmt == "txt" else (1 << 15) >> _pcm_shift(spec), np.int32)
    ids[:len(entry.data)] = entry.data
    return ids.reshape(n, L)
  h, w = shape[0], shape[1]
  arr = np.asarray(entry.data).astype(np.int32)
  if entry.fmt == "npy":
    arr = arr[None] if arr.ndim == 3 else arr[None, ..., None] if arr.ndim == 2 else arr
  else:
    arr = arr[None]
  return np.concatenate([_tiles(img, h, w) for img in arr])


def _from_items(entry: FileEntry, items: np.ndarray, shape: tuple) -> np.ndarray:
  """The file's content (txt: ids) from its items."""
  if entry.fmt in ("txt", "wav"):
    return items.reshape(-1)[:entry.size[0]]
  if entry.fmt == "png":
    return _untile(items, *entry.size)
  size = entry.size
  images = size[0] if len(size) == 4 else 1
  H, W = (size[1], size[2]) if len(size) == 4 else (size[0], size[1])
  per = len(items) // images
  out = np.stack([_untile(items[i * per:(i + 1) * per], H, W) for i in range(images)])
  return out.reshape(size).astype(np.dtype(entry.dtype))


def _read_png(spec, path: str) -> FileEntry:
  from ardm_jax import sample  # pylint: disable=import-outside-toplevel
  C, K = spec.shape[-1], spec.num_classes
  try:
    with Image.open(path) as img:
      if img.format != "PNG":
        raise ValueError(f"{path} is a {img.format} file, not a PNG; convert it to PNG (or .npy) first")
      if img.mode == "1":
        img = img.convert("L")
      elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
      if img.mode not in ("L", "RGB"):
        raise ValueError(f"{path} is a {img.mode} PNG; lossless coding takes 8-bit grayscale (L) or RGB PNGs "
                         "without alpha")
      pixels = np.asarray(img)
  except OSError as e:
    raise ValueError(f"{path} cannot be read as an image ({e})") from None
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if C == 1 and pixels.shape[-1] == 3 and np.all(pixels == pixels[..., :1]):
    pixels = pixels[..., :1]  # grey RGB: exactly representable; written back as 8-bit grayscale
  if pixels.shape[-1] != C:
    raise ValueError(f"{path} has {pixels.shape[-1]} channel(s) but the model codes {C}; convert it to "
                     f"{'grayscale' if C == 1 else 'RGB'} first")
  values = sample.from_uint8(pixels, K)
  bad = np.argwhere(sample.to_uint8(values, K) != pixels)
  if len(bad):
    r, c, ch = bad[0]
    raise ValueError(f"{path}: pixel value {pixels[r, c, ch]} at row {r}, column {c} is not one of the model's "
                     f"{K} levels round(k * 255 / {K - 1}); quantise the image to those levels (or pass .npy class "
                     "values) first")
  return FileEntry("png", tuple(pixels.shape[:2]), data=values)


def _read_npy(spec, path: str) -> FileEntry:
  try:
    arr = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} cannot be read as a .npy array ({e})") from None
  if not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{path} holds {arr.dtype} values; store integer class values 0..{spec.num_classes - 1}")
  C = spec.shape[-1]
  ok = (arr.ndim == 2 and C == 1) or (arr.ndim in (3, 4) and arr.shape[-1] == C)
  if not ok or 0 in arr.shape:
    raise ValueError(f"{path} has shape {arr.shape}; image .npy inputs are [H, W{', C' if C == 1 else ''}], "
                     f"[H, W, {C}] or a stack [N, H, W, {C}] for this model")
  if arr.min() < 0 or arr.max() >= spec.num_classes:
    raise ValueError(f"{path} has values {arr.min()}..{arr.max()}, outside the model's 0..{spec.num_classes - 1}")
  dtype = arr.dtype.newbyteorder("<").str if arr.dtype.itemsize > 1 else arr.dtype.str
  return FileEntry("npy", tuple(int(d) for d in arr.shape), dtype=dtype, data=arr)


def _read_txt(spec, path: str) -> FileEntry:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not UTF-8 text (byte {e.start}); text models code text files") from None
  newline = text.endswith("\n")
  text = text[:-1] if newline else text
  codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
  table = np.full(max(int(codes.max(initial=0)), max(map(ord, spec.alphabet))) + 1, -1, np.int64)
  table[[ord(ch) for ch in spec.alphabet]] = np.arange(len(spec.alphabet))
  ids = table[codes]
  bad = np.flatnonzero(ids < 0)
  if len(bad):
    i = int(bad[0])
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    raise ValueError(f"{path}: character {text[i]!r} at line {line}, column {col} is not in the model's alphabet "
                     f"{spec.alphabet!r}; only these characters (and one final newline) can be coded, so normalise "
                     "the text first (e.g. lowercase letters and single spaces for text8)")
  return FileEntry("txt", (len(ids),), newline=newline, data=ids.astype(np.int32))


def _read_wav(spec, path: str) -> FileEntry:
  rate, bits = int(spec.sample_rate), spec.bits or PCM_BITS
  expects = f"this model codes 16-bit PCM mono WAV at {rate} Hz"
  try:
    with wave.open(path, "rb") as w:
      channels, width, got_rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
      raw = w.readframes(frames)
  except (wave.Error, EOFError, OSError) as e:
    raise ValueError(f"{path} is not a readable PCM WAV file ({e}); {expects}") from None
  if (channels, width, got_rate) != (1, 2, rate):
    raise ValueError(f"{path} has {channels} channel(s) of {8 * width}-bit samples at {got_rate} Hz; {expects}: "
                     f"convert it first (e.g. sox {os.path.basename(path)} -r {rate} -b 16 -c 1 out.wav)")
  if len(raw) != 2 * frames:
    raise ValueError(f"{path} is truncated: its header announces {frames} samples, the file holds "
                     f"{len(raw) // 2}; repair or re-export it")
  pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
  shift = PCM_BITS - bits
  low = np.flatnonzero(pcm.astype(np.int32) & ((1 << shift) - 1))
  if len(low):  # pcm_to_classes would drop these bits: the clip could not come back exactly
    i = int(low[0])
    raise ValueError(f"{path}: sample {i} ({pcm[i]}) is not a multiple of {1 << shift}; this model codes "
                     f"{bits}-bit audio, so only clips quantised to {bits} bits come back exactly: quantise it "
                     "first or use a 16-bit model")
  from ardm_jax.data.audio import pcm_to_classes  # pylint: disable=import-outside-toplevel
  return FileEntry("wav", (len(pcm),), data=pcm_to_classes(pcm, bits))


def read_input(spec, path: str) -> FileEntry:
  """One input file as a FileEntry of the model's kind; unsupported or lossy inputs are refused clearly."""
  ext = os.path.splitext(path)[1].lower()
  if not os.path.isfile(path):
    raise ValueError(f"input file {path} does not exist")
  if spec.kind not in KIND_FORMATS:
    raise ValueError(f"this workdir's model codes {spec.kind} data; ardm compress supports image, text and audio "
                     "models")
  if spec.kind == "audio":
    if ext == ".wav":
      return _read_wav(spec, path)
    raise ValueError(f"{path}: audio models take .wav inputs (16-bit PCM mono at {spec.sample_rate} Hz)")
  if ext == ".wav":
    wanted = ".png/.npy" if spec.kind == "image" else ".txt"
    raise ValueError(f"{path}: WAV audio needs an audio model, but this workdir's model codes {spec.kind}: give it "
                     f"{wanted} files")
  if spec.kind == "image":
    if ext == ".png":
      return _read_png(spec, path)
    if ext == ".npy":
      return _read_npy(spec, path)
    if ext == ".txt":
      raise ValueError(f"{path} is text but this workdir's model codes images; use a text model's workdir")
    raise ValueError(f"{path}: image models take .png or .npy inputs")
  if ext == ".txt":
    return _read_txt(spec, path)
  raise ValueError(f"{path}: text models take .txt inputs (text on the model's alphabet)")


def _default_name(i: int, fmt: str) -> str:
  return f"item_{i:04d}.{fmt}"


def encode_file_table(entries: list[FileEntry], shape: tuple) -> bytes:
  """The compact file table (see the module docstring), or b"" when every file is a default one."""
  if all(e.is_default(shape) for e in entries):
    return b""
  out = [coding.varint_bytes(len(entries))]
  for e in entries:
    tag = FORMATS.index(e.fmt) | (4 if e.name is not None else 0) | (8 if e.newline else 0)
    out.append(bytes([tag]))
    if e.fmt == "npy":
      out.append(bytes([NPY_DTYPES.index(e.dtype)]) + coding.varint_bytes(len(e.size)))
    out.extend(coding.varint_bytes(d) for d in e.size)
    if e.name is not None:
      name = e.name.encode("utf-8")
      out.append(coding.varint_bytes(len(name)) + name)
  return b"".join(out)


def _check_name(name: str) -> str:
  if not name or name in (".", "..") or any(ch in name for ch in "/\\\0") or len(name.encode()) > MAX_NAME_BYTES:
    raise ValueError(f"{name!r} is not a plain file name")
  return name


def decode_file_table(table: bytes, spec, num_items: int) -> list[FileEntry]:
  """Parses a file table and checks it against the model and the item count; ContainerError otherwise."""
  shape = spec.shape
  if not table:
    if spec.kind == "image" and shape[-1] not in (1, 3):
      raise coding.ContainerError("corrupt file: no file table, but this model's items cannot be PNGs")
    fmt = KIND_FORMATS[spec.kind][0]
    return [FileEntry(fmt, tuple(shape[:2]) if fmt == "png" else tuple(shape)) for _ in range(num_items)]
  r = coding._Reader(bytes(table))  # pylint: disable=protected-access
  num_files = r.varint("number of files")
  if not 1 <= num_files <= num_items:
    raise coding.ContainerError(f"corrupt file table: {num_files} files for {num_items} items")
  entries, total, names = [], 0, set()
  for j in range(num_files):
    tag = r.take(1, f"tag of file {j}")[0]
    fmt_i = tag & 3
    if tag >> 4 or fmt_i >= len(FORMATS) or (tag & 8 and fmt_i != 2):
      raise coding.ContainerError(f"corrupt file table: bad tag 0x{tag:02x} for file {j}")
    fmt = FORMATS[fmt_i]
    if fmt not in KIND_FORMATS.get(spec.kind, ()):
      raise coding.ContainerError(f"corrupt file table: a {fmt} file cannot come from a {spec.kind} model")
    dtype = None
    if fmt == "npy":
      code = r.take(1, f"dtype of file {j}")[0]
      if code >= len(NPY_DTYPES):
        raise coding.ContainerError(f"corrupt file table: unknown dtype code {code}")
      dtype = NPY_DTYPES[code]
      ndim = r.varint(f"ndim of file {j}")
      if not 2 <= ndim <= 4:
        raise coding.ContainerError(f"corrupt file table: a .npy with {ndim} dimensions")
      size = tuple(r.varint(f"size of file {j}") for _ in range(ndim))
      C = shape[-1]
      if not ((ndim == 2 and C == 1) or (ndim in (3, 4) and size[-1] == C)):
        raise coding.ContainerError(f"corrupt file table: .npy shape {size} does not fit the model")
    else:
      size = tuple(r.varint(f"size of file {j}") for _ in range(2 if fmt == "png" else 1))
    if (fmt not in ("txt", "wav") and min(size) < 1) or (fmt == "png" and shape[-1] not in (1, 3)):
      raise coding.ContainerError(f"corrupt file table: implausible size {size} for file {j}")
    entry = FileEntry(fmt, size, dtype=dtype, newline=bool(tag & 8))
    total += entry.num_items(shape)
    if total > num_items:
      raise coding.ContainerError(f"corrupt file table: its files need more than the {num_items} items stored")
    if tag & 4:
      raw = r.take(r.varint(f"name length of file {j}"), f"name of file {j}")
      try:
        entry.name = _check_name(raw.decode("utf-8"))
      except (UnicodeDecodeError, ValueError):
        raise coding.ContainerError(f"corrupt file table: file {j} has an unsafe or invalid name") from None
      if entry.name in names:
        raise coding.ContainerError(f"corrupt file table: the name {entry.name!r} appears twice")
      names.add(entry.name)
    entries.append(entry)
  if total != num_items or r.pos != len(r.data):
    raise coding.ContainerError(f"corrupt file table: its files need {total} items, the container holds "
                                f"{num_items}" if total != num_items else "corrupt file table: trailing bytes")
  return entries


def output_names(entries: list[FileEntry]) -> list[str]:
  return [e.name if e.name is not None else _default_name(i, e.fmt) for i, e in enumerate(entries)]


def _write_entry(spec, entry: FileEntry, content: np.ndarray, path: str, overwrite: bool) -> None:
  from ardm_jax import sample  # pylint: disable=import-outside-toplevel
  with open(path, "wb" if overwrite else "xb") as f:
    if entry.fmt == "png":
      pixels = sample.to_uint8(content, spec.num_classes)
      Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(f, format="PNG")
    elif entry.fmt == "npy":
      np.save(f, content, allow_pickle=False)
    elif entry.fmt == "wav":
      # The exact inverse of _read_wav: classes back to their 16-bit samples (low bits zero for bits < 16).
      pcm = ((content.astype(np.int32) << _pcm_shift(spec)) - 32768).astype("<i2")
      with wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(spec.sample_rate))
        w.writeframes(pcm.tobytes())
    else:
      text = "".join(np.array(list(spec.alphabet))[content].tolist()) + ("\n" if entry.newline else "")
      f.write(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------------------------
# Whole jobs


def workdir_spec(workdir: str):
  """The model's DataSpec from the workdir alone (cheap: inputs are checked before the model is loaded)."""
  from ardm_jax.train import DATA_SPEC_FILE  # pylint: disable=import-outside-toplevel
  from ardm_jax.train_state import DataSpec  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, DATA_SPEC_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"{workdir} is not a training workdir (no {DATA_SPEC_FILE}); train first with "
                     f"`ardm train --config ... --workdir {workdir}`")
  with open(path) as f:
    return DataSpec.from_json(json.load(f))


def read_inputs(spec, paths: list[str], keep_names: bool = False) -> list[FileEntry]:
  """All inputs checked and read (see `read_input`); with `keep_names` their base names are kept."""
  if not paths:
    raise ValueError("no input files given")
  entries = [read_input(spec, p) for p in paths]
  if keep_names:
    for e, p in zip(entries, paths):
      e.name = _check_name(os.path.basename(p))
    seen = [e.name for e in entries]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup is not None:
      raise ValueError(f"two inputs are both named {dup!r}; --keep-names needs distinct file names")
  return entries


def compress_files(cm: CodingModel, paths_or_entries: list, *, mode: str = "item", budget: int | None = None,
                   naive: bool = False, policy_file: str | None = None, search_orders: int = 0,
                   search_items: int = 64, seed: int = 0, keep_names: bool = False,
                   split: str = "optimal") -> tuple[bytes, dict]:
  """Reads the inputs (paths, or entries from `read_inputs`), picks policy and order, and codes them into one
  container. Returns (bytes, report)."""
  if mode not in coding.MODES:
    raise ValueError(f"--mode must be one of {coding.MODES}, got {mode!r}")
  spec = cm.spec
  entries = paths_or_entries
  if not entries or not isinstance(entries[0], FileEntry):
    entries = read_inputs(spec, paths_or_entries, keep_names)
  items = np.concatenate([_to_items(e, spec) for e in entries])
  steps, policy_label = encoder_policy(cm, budget, naive, policy_file, split)
  report = {"policy": policy_label, "files": len(entries)}
  order_seed = seed
  if search_orders:
    order_seed, scores = search_order(cm, steps, search_orders, search_items, base_seed=seed)
    report["order_search"] = {"seeds": list(range(seed, seed + search_orders)), "train_bpd": scores,
                              "items": search_items}
  data, stats = compress_items(cm, items, mode=mode, steps=steps, order_seed=order_seed,
                               file_table=encode_file_table(entries, spec.shape))
  report |= {"order_seed": order_seed, "stats": stats}
  return data, report


def decompress_file(cm: CodingModel, data: bytes, outdir: str, *, policy_file: str | None = None,
                    overwrite: bool = False) -> tuple[list[str], CodingStats]:
  """Decodes a container and writes its files into `outdir`; refuses to replace files unless `overwrite`."""
  c, items, stats = decompress_items(cm, data, policy_file=policy_file)
  entries = decode_file_table(c.file_table, cm.spec, c.num_items)
  paths = [os.path.join(outdir, n) for n in output_names(entries)]
  if not overwrite:
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
      raise FileExistsError(f"{existing[0]} exists ({len(existing)} output file(s) would be replaced); choose "
                            "another output folder or pass --overwrite")
  os.makedirs(outdir, exist_ok=True)
  lo = 0
  for entry, path in zip(entries, paths):
    n = entry.num_items(cm.spec.shape)
    _write_entry(cm.spec, entry, _from_items(entry, items[lo:lo + n], cm.spec.shape), path, overwrite)
    lo += n
  return paths, stats


# --------------------------------------------------------------------------------------------------------------
# CLI


def _positive(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def add_parsers(sub) -> None:
  p = sub.add_parser("compress", help="lossless compression of images (.png/.npy), text or audio (.wav) with a "
                                      "trained model")
  p.add_argument("--workdir", required=True)
  p.add_argument("inputs", nargs="+", metavar="INPUT",
                 help=".png/.npy images, .txt text or 16-bit mono .wav audio (any size: tiled)")
  p.add_argument("-o", "--out", required=True, help="output container file")
  p.add_argument("--mode", choices=coding.MODES, default="item",
                 help="item: one ANS stream per item (the paper's per-image setting); dataset: one stream for all")
  p.add_argument("--budget", type=_positive, default=None,
                 help="network calls per batch of items, over all stages of an upscale model (default: one per "
                      "variable and stage, the best rate)")
  p.add_argument("--naive", action="store_true", help="evenly spaced policy steps instead of the DP policy")
  p.add_argument("--budget-split", choices=tuple(BUDGET_SPLIT_KEYS), default="optimal",
                 help="how an upscale model's --budget is divided over its stages for the DP policy: optimal "
                      "(lowest expected bits) or equal (the paper's Table 7); decompression finds it by itself")
  p.add_argument("--policy", default=None, help="policy file (default WORKDIR/policy.json); decode with the same")
  p.add_argument("--search-orders", type=int, default=0, metavar="N",
                 help="try the orders of N seeds on training items and keep the best (the paper uses 5)")
  p.add_argument("--search-items", type=_positive, default=64, help="training items for --search-orders")
  p.add_argument("--seed", type=int, default=0, help="order seed (first seed tried with --search-orders)")
  p.add_argument("--keep-names", action="store_true", help="store the input file names (costs their length)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--overwrite", action="store_true")

  p = sub.add_parser("decompress", help="restore the files of an `ardm compress` container")
  p.add_argument("--workdir", required=True, help="the workdir of the model that compressed the file")
  p.add_argument("input", metavar="IN")
  p.add_argument("-o", "--out", required=True, help="output folder (created if missing)")
  p.add_argument("--policy", default=None, help="policy file used for compression (default WORKDIR/policy.json)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--overwrite", action="store_true")


def _check_out_file(path: str, overwrite: bool) -> None:
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; choose another --out or pass --overwrite to replace it")


def cmd_compress(args) -> None:
  _check_out_file(args.out, args.overwrite)
  if args.search_orders < 0 or args.seed < 0:
    raise ValueError(f"--search-orders and --seed must be >= 0, got {args.search_orders} and {args.seed}")
  entries = read_inputs(workdir_spec(args.workdir), args.inputs, args.keep_names)  # bad inputs fail fast
  cm = open_coding_model(args.workdir, args.step)
  data, report = compress_files(cm, entries, mode=args.mode, budget=args.budget, naive=args.naive,
                                policy_file=args.policy, search_orders=args.search_orders,
                                search_items=args.search_items, seed=args.seed, keep_names=args.keep_names,
                                split=args.budget_split)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "wb" if args.overwrite else "xb") as f:
    f.write(data)
  s = report["stats"]
  unit = {"text": "bits/char", "audio": "bits/sample"}.get(cm.spec.kind, "bits/dim")
  if "order_search" in report:
    tried = ", ".join(f"{seed}: {bpd:.4f}" for seed, bpd in zip(report["order_search"]["seeds"],
                                                                  report["order_search"]["train_bpd"]))
    print(f"order search on {report['order_search']['items']} training items ({unit}): {tried}; "
          f"kept seed {report['order_seed']}")
  print(f"{report['files']} file(s) -> {s.num_items} item(s) of shape {s.item_shape}, mode {s.mode}, "
        f"{s.policy_steps} policy steps ({report['policy']}), order seed {report['order_seed']}, "
        f"{s.network_calls} network calls, {s.seconds:.2f}s")
  print(f"{args.out}: {s.total_bytes} bytes = {s.bpd(8 * s.total_bytes):.4f} {unit} "
        f"(header {s.header_bytes} B, records {s.record_bytes} B, payload {s.payload_bytes} B)")
  print(f"payload {s.bpd(8 * s.payload_bytes):.4f} {unit}; model NLL for this order and policy "
        f"{s.bpd(s.model_nll_bits):.4f} {unit} (quantised tables {s.bpd(s.table_nll_bits):.4f})")


def cmd_decompress(args) -> None:
  if not os.path.isfile(args.input):
    raise ValueError(f"input file {args.input} does not exist")
  with open(args.input, "rb") as f:
    data = f.read()
  spec = workdir_spec(args.workdir)
  # A damaged file or a non-container fails here, before the model is loaded (parsing only: any stage count).
  coding.unpack_container(data, expected_fingerprint=None, expected_shape=spec.shape, max_symbols=MAX_DECODE_SYMBOLS,
                          num_stages=coding.MAX_STAGES)
  cm = open_coding_model(args.workdir, args.step)
  paths, s = decompress_file(cm, data, args.out, policy_file=args.policy, overwrite=args.overwrite)
  print(f"{args.input}: {s.num_items} item(s), mode {s.mode}, {s.policy_steps} policy steps, "
        f"{s.network_calls} network calls, {s.seconds:.2f}s -> {len(paths)} file(s) in {args.out}")
