"""ARDM networks: one call signature for every modality, so the ARDM math takes any of them as a plain apply_fn.

    net = build_network(model_cfg, data_shape, num_classes)
    variables = net.init({'params': key, 'dropout': key2}, x_in, known, t, train=False)
    logits = net.apply(variables, x_in, known, t, train=True, rngs={'dropout': key3})

x_in int [B, *data_shape] in 0..K (K = absorbing), known bool [B, *data_shape],
t int [B] (number of known variables) -> float32 logits [B, *data_shape, K]. Where build_network is given
other sizes, x_in ranges over 0..num_input_classes-1, t over 0..num_steps-1 and the last axis is num_outputs
(e.g. 3 M for a logistic mixture); an upscale ARDM's t is the global step s * D + t over num_steps = S * D, with
num_stages = S.

model_cfg keys (sizes have no defaults, so a config always states its model size):
  unet:        ch, num_res_blocks, input_embed_dim;
               optional num_heads=1, attention=True, dropout=0.0, dtype='float32', remat=False,
               attention_impl='plain', scan_layers=False, input_numeric=False (the official input layer: a
               conv on the values as numbers and the mask for 3/4 of ch, the id embedding projected to ch/4;
               ch divisible by 4), input_embed_std=1.0, time_endpoint=False
  transformer: num_layers, emb_dim, mlp_dim, num_heads;
               optional dropout=0.0, dtype='float32', remat=False, attention_impl='plain', scan_layers=False,
               causal=False (items of any shape, read in raster order; causal=True is the single-order ARM
               baseline's network), rope=False (rotary positions in every attention layer),
               positions='learned' ('sinusoidal': the official text8 model's fixed table; 'none'),
               time_input=True, mask_input=True (embeddings of t and of the known-mask; the official text8
               model has neither), time_endpoint=False, kernel_init='lecun_normal', attention_bias=True
  diffwave:    num_blocks, features (divisible by 4);
               optional dilation_cycle=12, kernel_size=3, skip_features=features, dropout=0.0,
               dtype='float32', remat=False, scan_layers=False, kernel_init='lecun_normal',
               input_embed_std=1.0, time_endpoint=False
Every network: optional stage_input=False (with num_stages S > 1, the stage s = t // D as S one-hot channels
beside the known-mask, the official upscale input: into conv_in for unet and diffwave, an embedding added at every
position for transformer; no effect with one stage). remat is one of layers.REMAT_CHOICES ('none', 'attention',
'full' or a jax.checkpoint_policies name; True / False from older configs read as 'full' / 'none'); attention_impl
one of attention.ATTENTION_IMPLS ('plain' is the einsum form older checkpoints were trained with; 'xla', 'cudnn',
'auto' go through jax.nn.dot_product_attention); scan_layers=True compiles each run of identical blocks once with
nn.scan, stacking their parameters on a leading 'layers' axis (`scan_params` converts an unrolled checkpoint's
parameters).
Initialisers and embeddings (the paper configs set the official code's choices): kernel_init is one of
layers.KERNEL_INITS, for the layers each network's docstring names; input_embed_std is the standard deviation of
the id embedding's initial entries; attention_bias=False leaves the attention projections without biases;
time_endpoint=True spaces the time embedding's frequencies as the official code does (ln(10^4) / (half - 1), see
layers.sinusoidal_embedding). Each optional key's default is what configs without it (older workdirs and model
folders) were built with, so they load and compute as before.
Unknown keys are rejected so a misspelt option cannot be silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ardm_jax.nets import attention, layers
from ardm_jax.nets.diffwave import DiffWave
from ardm_jax.nets.transformer import Transformer
from ardm_jax.nets.unet import UNet

__all__ = ["build_network", "scan_params", "UNet", "Transformer", "DiffWave", "attention", "layers"]

_SPECS = {
  "unet": dict(
    required=("ch", "num_res_blocks", "input_embed_dim"),
    optional=dict(
      num_heads=1,
      attention=True,
      dropout=0.0,
      dtype="float32",
      remat=False,
      attention_impl="plain",
      scan_layers=False,
      input_numeric=False,
      stage_input=False,
      input_embed_std=1.0,
      time_endpoint=False,
    ),
    rank=3,
    shape_doc="(H, W, C)",
  ),
  "transformer": dict(
    required=("num_layers", "emb_dim", "mlp_dim", "num_heads"),
    optional=dict(
      dropout=0.0,
      dtype="float32",
      remat=False,
      attention_impl="plain",
      scan_layers=False,
      causal=False,
      rope=False,
      positions="learned",
      time_input=True,
      mask_input=True,
      stage_input=False,
      time_endpoint=False,
      kernel_init="lecun_normal",
      attention_bias=True,
    ),
    rank=None,
    shape_doc="(L,) or any item shape (raster order)",
  ),
  "diffwave": dict(
    required=("num_blocks", "features"),
    optional=dict(
      dilation_cycle=12,
      kernel_size=3,
      skip_features=None,
      dropout=0.0,
      dtype="float32",
      remat=False,
      scan_layers=False,
      stage_input=False,
      kernel_init="lecun_normal",
      input_embed_std=1.0,
      time_endpoint=False,
    ),
    rank=1,
    shape_doc="(L,)",
  ),
}
_CLASSES = {"unet": UNet, "transformer": Transformer, "diffwave": DiffWave}
# Output/input/step/stage sizes that differ from the OA-ARDM defaults (K logits, K+1 input ids, D steps, 1 stage).
_SIZE_OPTIONS = ("num_outputs", "num_input_classes", "num_steps", "num_stages")


def build_network(model_cfg: Mapping[str, Any], data_shape: tuple[int, ...], num_classes: int, **sizes) -> nn.Module:
  """Builds the network named by model_cfg.name for items of `data_shape` with K classes.

  Args:
    model_cfg: 'name' ('unet', 'transformer' or 'diffwave') and that network's keys (module docstring).
    data_shape: the item shape: (H, W, C) for 'unet', (L,) for 'diffwave', any for 'transformer'.
    num_classes: K >= 2, the data classes.
    **sizes: num_outputs (default K), num_input_classes (default K + 1), num_steps (default D) and num_stages
      (default 1; read only with model.stage_input), for other output distributions and upscale ARDMs; None
      keeps the default.

  Returns:
    The unbound flax module (`UNet`, `Transformer` or `DiffWave`), called as in the module docstring.

  Raises:
    ValueError: for an unknown name, a data_shape of the wrong rank or with a zero size, K < 2, unknown or
      missing keys, an unknown dtype, remat, attention_impl or kernel_init, or an unknown size option.
  """
  cfg = dict(model_cfg.items())
  name = cfg.pop("name", None)
  if name not in _SPECS:
    raise ValueError(f"unknown model.name {name!r}; set model.name to one of {sorted(_SPECS)}")
  spec = _SPECS[name]

  data_shape = tuple(int(s) for s in data_shape)
  if (spec["rank"] is not None and len(data_shape) != spec["rank"]) or min(data_shape, default=0) < 1:
    raise ValueError(
      f"model {name!r} needs data_shape {spec['shape_doc']}, got {data_shape}; "
      f"use {'transformer' if name == 'unet' else 'unet'} for this data or reshape it"
    )
  if int(num_classes) < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}; pass the data set's K")

  unknown = sorted(set(cfg) - set(spec["required"]) - set(spec["optional"]))
  if unknown:
    raise ValueError(
      f"unknown model config key(s) {unknown} for {name!r}; allowed: "
      f"{sorted(spec['required']) + sorted(spec['optional'])}"
    )
  missing = [k for k in spec["required"] if k not in cfg]
  if missing:
    raise ValueError(f"model config for {name!r} is missing {missing}; add them to config.model")
  kwargs = {**spec["optional"], **cfg}
  kwargs["dtype"] = layers.compute_dtype(kwargs["dtype"])
  kwargs["remat"] = layers.remat_choice(kwargs["remat"])
  if "attention_impl" in kwargs:
    attention.check_attention_impl(kwargs["attention_impl"])
  if "kernel_init" in kwargs:
    layers.kernel_initializer(kwargs["kernel_init"])  # raises for an unknown name
  kwargs["scan_layers"] = bool(kwargs["scan_layers"])

  unknown_sizes = sorted(set(sizes) - set(_SIZE_OPTIONS))
  if unknown_sizes:
    raise ValueError(f"unknown network size option(s) {unknown_sizes}; allowed: {list(_SIZE_OPTIONS)}")
  sizes = {k: int(v) for k, v in sizes.items() if v is not None}
  return _CLASSES[name](num_classes=int(num_classes), data_shape=data_shape, **kwargs, **sizes)


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def scan_params(params: Mapping[str, Any], net: nn.Module) -> dict:
  """An unrolled parameter tree (scan_layers=False) in the layout of `net` with scan_layers=True.

  Per-layer subtrees are stacked on a new leading axis in layer order: block_i -> blocks (Transformer);
  down_res_i / down_attn_i -> down/res, down/attn and up_res_i / up_attn_i -> up/res, up/attn (U-Net);
  block_{c * dilation_cycle + j} -> cycles/block_j (DiffWave). Other entries are kept as they are.

  Args:
    params: the 'params' collection of the unrolled network (left unchanged).
    net: the network; only its class and layer counts are read.

  Returns:
    A new parameter dict for the scanned network.

  Raises:
    ValueError: if `net` is not a UNet, Transformer or DiffWave.
  """
  params = dict(params)
  if isinstance(net, Transformer):
    params["blocks"] = _stack([params.pop(f"block_{i}") for i in range(net.num_layers)])
  elif isinstance(net, UNet):
    for half, count in (("down", net.num_res_blocks), ("up", net.num_res_blocks + 1)):
      if not count:
        continue
      unit = {"res": _stack([params.pop(f"{half}_res_{i}") for i in range(count)])}
      if net.attention:
        unit["attn"] = _stack([params.pop(f"{half}_attn_{i}") for i in range(count)])
      params[half] = unit
  elif isinstance(net, DiffWave):
    cycle, blocks = net.dilation_cycle, [params.pop(f"block_{i}") for i in range(net.num_blocks)]
    params["cycles"] = {f"block_{j}": _stack(blocks[j::cycle]) for j in range(cycle)}
  else:
    raise ValueError(f"scan_params does not know {type(net).__name__}")
  return params
