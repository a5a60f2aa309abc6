"""Bidirectional pre-LayerNorm Transformer for sequences (the ARDM text8 network).

Time conditioning is added once, to the token embeddings (with position and known-mask
embeddings); with no causal mask every position can attend to every other one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ardm_jax.nets import layers

_ACT_3D = ('batch', 'act_length', 'act_embed')


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxE: jax.Array) -> jax.Array:
    emb_dim = x_BxLxE.shape[-1]
    h = layers.dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype, name='wi')(x_BxLxE)
    h = layers.constrain(nn.gelu(h), ('batch', 'act_length', 'act_mlp'))
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    return layers.dense(emb_dim, ('mlp', 'embed'), dtype=self.dtype, name='wo')(h)


class TransformerBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dropout: float
  deterministic: bool  # an attribute, not a call argument, so nn.remat needs no static args
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxE: jax.Array) -> jax.Array:
    h = layers.layer_norm(dtype=self.dtype, name='norm_attn')(x_BxLxE)
    h = layers.SelfAttention(self.num_heads, dtype=self.dtype, name='attn')(h)
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    x_BxLxE = layers.constrain(x_BxLxE + h, _ACT_3D)
    h = layers.layer_norm(dtype=self.dtype, name='norm_mlp')(x_BxLxE)
    h = MlpBlock(self.mlp_dim, self.dropout, self.deterministic, dtype=self.dtype, name='mlp')(h)
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    return layers.constrain(x_BxLxE + h, _ACT_3D)


class Transformer(nn.Module):
  """x_in [B,L] in 0..K (K absorbing), known [B,L], t [B] -> logits f32 [B,L,K] (sizes as in UNet)."""
  num_classes: int          # K data classes; the token table has K+1 rows
  data_shape: tuple[int]    # (L,)
  num_layers: int
  emb_dim: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  num_outputs: int | None = None
  num_input_classes: int | None = None
  num_steps: int | None = None

  @nn.compact
  def __call__(self, x_in: jax.Array, known: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    (length,) = self.data_shape
    layers.check_inputs(x_in, known, t, self.data_shape)
    num_outputs, num_inputs, num_steps = layers.output_input_step_sizes(self)

    # Row K is the absorbing value; sizing the table K+1 keeps lookups in range
    # (an out-of-range jnp.take silently yields NaN).
    tok_BxLxE = layers.embed(num_inputs, self.emb_dim, dtype=self.dtype,
                             name='token_embed')(x_in)
    pos_LxE = self.param('pos_embed',
                         layers.partitioned(nn.initializers.normal(0.02), ('length_pos', 'embed')),
                         (length, self.emb_dim), jnp.float32)
    known_BxLxE = layers.embed(2, self.emb_dim, dtype=self.dtype,
                               name='known_embed')(known.astype(jnp.int32))
    temb_BxE = layers.TimeEmbedding(num_steps, sin_dim=self.emb_dim, hidden_dim=self.mlp_dim,
                                    out_dim=self.emb_dim, dtype=self.dtype, name='time_embed')(t)

    h = (tok_BxLxE + pos_LxE.astype(self.dtype)[None, :, :] + known_BxLxE
         + temb_BxE[:, None, :]).astype(self.dtype)
    h = layers.constrain(h, _ACT_3D)
    h = nn.Dropout(self.dropout)(h, deterministic=not train)

    block_cls = nn.remat(TransformerBlock) if self.remat else TransformerBlock
    for i in range(self.num_layers):
      h = block_cls(self.num_heads, self.mlp_dim, self.dropout, deterministic=not train,
                    dtype=self.dtype, name=f'block_{i}')(h)

    h = layers.layer_norm(dtype=self.dtype, name='norm_out')(h)
    logits_BxLxK = layers.dense(num_outputs, ('embed', 'vocab'), dtype=self.dtype,
                                name='logits')(h).astype(jnp.float32)
    return layers.constrain(logits_BxLxK, ('batch', 'act_length', 'act_classes'))
