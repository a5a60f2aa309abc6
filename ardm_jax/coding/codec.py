"""Compress and decompress in one call: orders from the seed, the coding walk, and the container.

What a caller with a network call and a policy needs, and the reference for what a decoder must check: the
file's model (fingerprint), stage count and symbol scheme before any network call, the policy by its hash, and
the decoded items by their CRCs. A file is refused with a `ContainerError`, never decoded to wrong data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ardm_jax.coding.checks import MAX_SYMBOLS
from ardm_jax.coding.container import MODES, Container, check_crc, check_policy, check_stages, check_symbols
from ardm_jax.coding.orders import stage_orders
from ardm_jax.coding.packing import pack_container, unpack_container
from ardm_jax.coding.stages import index_stages, num_stages_of
from ardm_jax.coding.walk import Predict, decode_items, decode_stream, encode_items, encode_stream, symbol_model

PolicySource = Sequence[int] | np.ndarray | Callable[[int, int], Sequence[int]]


def compress(
  predict: Predict,
  items,
  *,
  mode: str,
  fingerprint: str,
  kind: str,
  policy,
  order_seed: int,
  num_classes: int,
  file_table: bytes = b"",
  stages=None,
  symbols=None,
  compact: bool = False,
) -> bytes:
  """Codes items into one container with len(policy) network calls.

  Args:
    predict: the network call (see `walk`).
    items: int [B, *item_shape], values in 0..K-1.
    mode: 'item' (one stream per item) or 'dataset' (one stream).
    fingerprint: the model's full hex fingerprint.
    kind: 'image', 'text' or 'audio'.
    policy: the global steps, int [P] (over S * D steps for an upscale model).
    order_seed: the seed of the orders (`orders.stage_orders`).
    num_classes: K.
    file_table: opaque caller bytes stored in the header.
    stages: None for a plain OA-ARDM, else the upscale model's transitions (see `stages`).
    symbols: the symbol model (default: tables over the slots).
    compact: write version 3, which leaves the item shape, a one-call-per-variable policy, order seed 0 with
      one item, and the stage count to the model (the decoder passes them: `expected_shape`, `stages`).

  Returns:
    The container's bytes.

  Raises:
    ValueError: malformed arguments or network outputs.
  """
  items = np.asarray(items)
  if items.ndim < 2:
    raise ValueError(f"items must have shape [B, *item_shape], got {items.shape}")
  x = items.reshape(items.shape[0], -1)
  S = num_stages_of(stages)
  sigma = stage_orders(order_seed, x.shape[1], S)
  if mode == "dataset":
    payloads = [encode_stream(predict, x, sigma, policy, num_classes, stages, symbols)]
  elif mode == "item":
    payloads = encode_items(predict, x, sigma, policy, num_classes, stages, symbols)
  else:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  return pack_container(
    payloads,
    x,
    mode=mode,
    fingerprint=fingerprint,
    kind=kind,
    item_shape=items.shape[1:],
    policy=policy,
    order_seed=order_seed,
    num_classes=num_classes,
    file_table=file_table,
    num_stages=S,
    symbols=symbol_model(symbols, index_stages(stages, num_classes)).name,
    compact=compact,
    implied_shape=items.shape[1:],
  )


def decompress(
  data: bytes,
  predict: Predict,
  *,
  expected_fingerprint: str,
  policy: PolicySource,
  num_classes: int,
  expected_shape=None,
  max_symbols: int = MAX_SYMBOLS,
  stages=None,
  symbols=None,
) -> tuple[Container, np.ndarray]:
  """Decodes a container made by `compress` (inverse of it), never to wrong data.

  Args:
    data: the container's bytes.
    predict: the network call, bit-identical to the encoder's.
    expected_fingerprint: the model's full hex fingerprint.
    policy: the global steps, or a function (budget, D) -> steps (e.g. a lookup in the model's policy file;
      it may raise ContainerError for an unknown budget).
    num_classes: K.
    expected_shape: the model's item shape (needed for compact files).
    max_symbols: a cap on the coded symbols N * S * D (see `packing.unpack_container`).
    stages: as given to `compress`.
    symbols: as given to `compress`.

  Returns:
    (the parsed `Container`, the items int32 [N, *item_shape]).

  Raises:
    ContainerError: the file is corrupt, truncated or was made with another model, policy or scheme.
  """
  c = unpack_container(
    data,
    expected_fingerprint=expected_fingerprint,
    expected_shape=expected_shape,
    max_symbols=max_symbols,
    num_stages=num_stages_of(stages),
  )
  check_stages(c, num_stages_of(stages))
  check_symbols(c, symbol_model(symbols, index_stages(stages, num_classes)))
  steps = check_policy(c, policy(c.budget, c.D) if callable(policy) else policy)
  sigma = stage_orders(c.order_seed, c.D, c.num_stages)
  if c.mode == "dataset":
    x = decode_stream(predict, c.payloads[0], sigma, steps, c.num_items, c.D, num_classes, stages, symbols)
  else:
    x = decode_items(predict, list(c.payloads), sigma, steps, c.num_items, c.D, num_classes, stages, symbols)
  check_crc(c, x, num_classes)
  return c, x.reshape((c.num_items,) + c.item_shape)
