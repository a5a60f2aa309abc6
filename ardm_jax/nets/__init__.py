"""ARDM networks: one call signature for every modality.

    net = build_network(model_cfg, data_shape, num_classes)
    variables = net.init({'params': key, 'dropout': key2}, x_in, known, t, train=False)
    logits = net.apply(variables, x_in, known, t, train=True, rngs={'dropout': key3})

x_in int [B, *data_shape] in 0..K (K = absorbing), known bool [B, *data_shape],
t int [B] (number of known variables) -> float32 logits [B, *data_shape, K].

model_cfg keys (sizes have no defaults, so a config always states its model size):
  unet:        ch, num_res_blocks, input_embed_dim;
               optional num_heads=1, attention=True, dropout=0.0, dtype='float32', remat=False,
               input_numeric=False (the official input layer: a conv on the values as numbers and the mask for
               3/4 of ch, the id embedding projected to ch/4; ch divisible by 4)
  transformer: num_layers, emb_dim, mlp_dim, num_heads;
               optional dropout=0.0, dtype='float32', remat=False, causal=False (items of any shape, read in
               raster order; causal=True is the single-order ARM baseline's network), rope=False (rotary
               positions in every attention layer), positions='learned' ('sinusoidal': the official text8
               model's fixed table; 'none'), time_input=True, mask_input=True (embeddings of t and of the
               known-mask; the official text8 model has neither)
  diffwave:    num_blocks, features (divisible by 4);
               optional dilation_cycle=12, kernel_size=3, skip_features=features, dropout=0.0,
               dtype='float32', remat=False
Unknown keys are rejected so a misspelt option cannot be silently ignored.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn

from ardm_jax.nets import layers
from ardm_jax.nets.diffwave import DiffWave
from ardm_jax.nets.transformer import Transformer
from ardm_jax.nets.unet import UNet

__all__ = ['build_network', 'UNet', 'Transformer', 'DiffWave', 'layers']

_SPECS = {
    'unet': dict(
        required=('ch', 'num_res_blocks', 'input_embed_dim'),
        optional=dict(num_heads=1, attention=True, dropout=0.0, dtype='float32', remat=False, input_numeric=False),
        rank=3, shape_doc='(H, W, C)'),
    'transformer': dict(
        required=('num_layers', 'emb_dim', 'mlp_dim', 'num_heads'),
        optional=dict(dropout=0.0, dtype='float32', remat=False, causal=False, rope=False, positions='learned',
                      time_input=True, mask_input=True),
        rank=None, shape_doc='(L,) or any item shape (raster order)'),
    'diffwave': dict(
        required=('num_blocks', 'features'),
        optional=dict(dilation_cycle=12, kernel_size=3, skip_features=None, dropout=0.0, dtype='float32',
                      remat=False),
        rank=1, shape_doc='(L,)'),
}
_CLASSES = {'unet': UNet, 'transformer': Transformer, 'diffwave': DiffWave}
# Output/input/step sizes that differ from the OA-ARDM defaults (K logits, K+1 input ids, D steps).
_SIZE_OPTIONS = ('num_outputs', 'num_input_classes', 'num_steps')


def build_network(model_cfg: Mapping[str, Any], data_shape: tuple[int, ...],
                  num_classes: int, **sizes) -> nn.Module:
  """Builds the network named by model_cfg.name for items of `data_shape` with K classes.

  `sizes` (num_outputs, num_input_classes, num_steps; None = default) serve other output distributions and
  upscale ARDMs; see the diffwave module.
  """
  cfg = dict(model_cfg.items())
  name = cfg.pop('name', None)
  if name not in _SPECS:
    raise ValueError(f'unknown model.name {name!r}; set model.name to one of {sorted(_SPECS)}')
  spec = _SPECS[name]

  data_shape = tuple(int(s) for s in data_shape)
  if (spec['rank'] is not None and len(data_shape) != spec['rank']) or min(data_shape, default=0) < 1:
    raise ValueError(f"model {name!r} needs data_shape {spec['shape_doc']}, got {data_shape}; "
                     f"use {'transformer' if name == 'unet' else 'unet'} for this data or reshape it")
  if int(num_classes) < 2:
    raise ValueError(f'num_classes must be >= 2, got {num_classes}; pass the data set\'s K')

  unknown = sorted(set(cfg) - set(spec['required']) - set(spec['optional']))
  if unknown:
    raise ValueError(f"unknown model config key(s) {unknown} for {name!r}; allowed: "
                     f"{sorted(spec['required']) + sorted(spec['optional'])}")
  missing = [k for k in spec['required'] if k not in cfg]
  if missing:
    raise ValueError(f'model config for {name!r} is missing {missing}; add them to config.model')
  kwargs = {**spec['optional'], **cfg}
  kwargs['dtype'] = layers.compute_dtype(kwargs['dtype'])

  unknown_sizes = sorted(set(sizes) - set(_SIZE_OPTIONS))
  if unknown_sizes:
    raise ValueError(f'unknown network size option(s) {unknown_sizes}; allowed: {list(_SIZE_OPTIONS)}')
  sizes = {k: int(v) for k, v in sizes.items() if v is not None}
  return _CLASSES[name](num_classes=int(num_classes), data_shape=data_shape, **kwargs, **sizes)
