"""Pre-LayerNorm Transformer for sequences (the ARDM text8 network) and, in raster order, for any item shape.

Time conditioning is added once, to the token embeddings (with position and known-mask embeddings). By default
every position attends to every other one (what an ARDM needs); `causal=True` lets position i see positions
<= i only, the network of the single-order ARM baseline (`ardm_jax/baselines.py`). `rope=True` adds rotary
position embeddings to every attention layer: a bidirectional network with only the learned absolute positions
starts position-blind, and a small text OA-ARDM then sits at the unigram loss for a thousand steps and more
(measured: 4.07 bits/char after 800 steps without, 3.41 after 600 with it; the CPU text configs turn it on).
Items of rank > 1 (images) are read as one sequence in raster order (row-major: rows, then columns, then
channels) and the outputs are reshaped back, so a raster-order image ARM is this network with causal=True.

Inputs: `positions` is 'learned' (an N(0, 0.02) table, the default), 'sinusoidal' (the fixed sin/cos table of the
official text8 model, added at unit amplitude to the N(0, 1) token embeddings, no parameters) or 'none' (with
rope, positions enter through attention only). `time_input` and `mask_input` (both on by default) add embeddings
of t and of the known-mask; the official text8 model has neither and reads unknown positions from the absorbing
token alone. `stage_input` (off by default) adds, at every position, a learned embedding of an upscale model's stage
s = t // (num_steps / S): the counterpart of the S stage channels the conv networks get beside the mask (the
official text8 Transformer discards mask and stage alike; its upscale ids tell the stage).

Initialisation: `kernel_init` chooses the initialiser of the weight kernels of the blocks (attention q, k, v and
output, MLP) and of the logits layer ('lecun_normal' by default; the official text8 model uses 'xavier_uniform'),
and `attention_bias=False` leaves the biases out of the attention projections, as the official model does. The
embeddings and the time embedding keep their own initialisers.

Numerics: with a bf16 compute dtype each block still reads and writes a float32 residual stream, and the final
LayerNorm and logits layer run in float32, so neither the residual sums nor the logits are rounded to bf16.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ardm_jax.nets import attention, layers

POSITIONS = ("learned", "sinusoidal", "none")
_ACT_3D = ("batch", "act_length", "act_embed")


class MlpBlock(nn.Module):
  """Dense -> GELU -> dropout -> Dense, the feed-forward half of a TransformerBlock.

  Attributes:
    mlp_dim: hidden width.
    dropout: dropout rate after the GELU.
    deterministic: no dropout.
    dtype: compute dtype.
    kernel_init: the initialiser of both kernels, one of layers.KERNEL_INITS.
  """

  mlp_dim: int
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32
  kernel_init: str = "lecun_normal"

  @nn.compact
  def __call__(self, x_BxLxE: jax.Array) -> jax.Array:
    """x [B, L, E] -> [B, L, E] in `dtype`."""
    emb_dim = x_BxLxE.shape[-1]
    h = layers.dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, kernel_init=self.kernel_init, name="wi")(x_BxLxE)
    h = layers.constrain(nn.gelu(h), ("batch", "act_length", "act_mlp"))
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    return layers.dense(emb_dim, ("mlp", "embed"), dtype=self.dtype, kernel_init=self.kernel_init, name="wo")(h)


class TransformerBlock(nn.Module):
  """Pre-LayerNorm block: x + dropout(attention(norm(x))), then the same with the MlpBlock.

  Attributes:
    num_heads: attention heads; must divide E.
    mlp_dim: the MlpBlock's hidden width.
    dropout: dropout rate after each branch and inside the MlpBlock.
    deterministic: no dropout; an attribute, not a call argument, so nn.remat needs no static args.
    dtype: compute dtype of both branches (the residual sums are float32).
    causal: position i attends to positions <= i only.
    rope: rotary position embedding in the attention.
    attention_impl: one of attention.ATTENTION_IMPLS.
    remat_attention: recompute the attention layer in the backward pass (model.remat='attention').
    in_scan: the block is the body of nn.scan (prevent_cse can be off, see layers.maybe_remat).
    kernel_init: the initialiser of the attention and MLP kernels, one of layers.KERNEL_INITS.
    attention_bias: biases in the attention projections.
  """

  num_heads: int
  mlp_dim: int
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32
  causal: bool = False
  rope: bool = False
  attention_impl: str = "plain"
  remat_attention: bool = False
  in_scan: bool = False
  kernel_init: str = "lecun_normal"
  attention_bias: bool = True

  @nn.compact
  def __call__(self, x_BxLxE: jax.Array) -> jax.Array:
    """x [B, L, E] (the float32 residual stream) -> float32 [B, L, E]."""
    h = layers.layer_norm(dtype=self.dtype, name="norm_attn")(x_BxLxE)
    attn_cls = layers.maybe_remat(
      attention.SelfAttention, "attention" if self.remat_attention else "none", "attention", in_scan=self.in_scan
    )
    h = attn_cls(
      self.num_heads,
      dtype=self.dtype,
      causal=self.causal,
      rope=self.rope,
      impl=self.attention_impl,
      kernel_init=self.kernel_init,
      use_bias=self.attention_bias,
      name="attn",
    )(h)
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    # The stream x is float32 (see the module docstring); each branch computes in self.dtype and is added in float32.
    x_BxLxE = layers.constrain(x_BxLxE + h.astype(jnp.float32), _ACT_3D)
    h = layers.layer_norm(dtype=self.dtype, name="norm_mlp")(x_BxLxE)
    h = MlpBlock(
      self.mlp_dim, self.dropout, self.deterministic, dtype=self.dtype, kernel_init=self.kernel_init, name="mlp"
    )(h)
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    return layers.constrain(x_BxLxE + h.astype(jnp.float32), _ACT_3D)


class Transformer(nn.Module):
  """x_in [B,*shape] in 0..K (K absorbing), known [B,*shape], t [B] -> logits f32 [B,*shape,K] (sizes as in
  UNet); L = prod(shape) positions in raster order.

  Attributes:
    num_classes: K data classes.
    data_shape: (L,) for sequences; (H, W, C) etc. for raster order.
    num_layers: TransformerBlocks.
    emb_dim: E, the width of the residual stream.
    mlp_dim: hidden width of each MlpBlock and of the time embedding.
    num_heads: attention heads; must divide emb_dim.
    dropout: dropout rate on the input sum and in every block (only with train=True).
    dtype: compute dtype; the input sum, the residual stream, the final norm and the logits stay float32.
    remat: one of layers.REMAT_CHOICES; True / False read as 'full' / 'none'.
    attention_impl: one of attention.ATTENTION_IMPLS.
    scan_layers: one nn.scan over the layers (params stacked under 'blocks') instead of block_0, block_1, ...
    causal: position i sees positions <= i only (the single-order ARM baseline).
    rope: rotary position embedding in every attention layer.
    positions: one of POSITIONS (module docstring).
    time_input: add an embedding of t.
    mask_input: add an embedding of the known-mask.
    stage_input: with num_stages S > 1, add an embedding of the stage (module docstring); False (and S = 1) keeps
      older checkpoints' layout.
    time_endpoint: the time embedding's frequency spacing (layers.sinusoidal_embedding's `endpoint`).
    kernel_init: the initialiser of the blocks' and the logits layer's kernels, one of layers.KERNEL_INITS.
    attention_bias: biases in the attention projections.
    num_outputs: outputs per variable; None: K.
    num_input_classes: rows of the token table; None: K + 1.
    num_steps: range of t for the time embedding; None: D = L.
    num_stages: S, the upscale stages (t = s * D + t within the stage); None: 1.
  """

  num_classes: int
  data_shape: tuple[int, ...]
  num_layers: int
  emb_dim: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool | str = False
  attention_impl: str = "plain"
  scan_layers: bool = False
  causal: bool = False
  rope: bool = False
  positions: str = "learned"
  time_input: bool = True
  mask_input: bool = True
  stage_input: bool = False
  time_endpoint: bool = False
  kernel_init: str = "lecun_normal"
  attention_bias: bool = True
  num_outputs: int | None = None
  num_input_classes: int | None = None
  num_steps: int | None = None
  num_stages: int | None = None

  @nn.compact
  def __call__(self, x_in: jax.Array, known: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    """One network call on a batch of partially known items.

    Args:
      x_in: int [B, *data_shape] ids in 0..num_input_classes-1 (data values below K, the absorbing value K).
      known: bool [B, *data_shape], the known-mask (unused with mask_input=False).
      t: int [B] steps in 0..num_steps-1 (unused with time_input=False and no stage input).
      train: dropout on (needs a 'dropout' rng).

    Returns:
      float32 [B, *data_shape, num_outputs].

    Raises:
      ValueError: for inputs of the wrong shape or dtype, an unknown positions, remat or attention_impl, or
        num_heads not dividing emb_dim.
    """
    layers.check_inputs(x_in, known, t, self.data_shape)
    if self.positions not in POSITIONS:
      raise ValueError(f"unknown model.positions {self.positions!r}; set it to one of {list(POSITIONS)}")
    num_outputs, num_inputs, num_steps = layers.output_input_step_sizes(self)
    batch, length = x_in.shape[0], int(np.prod(self.data_shape))
    x_in, known = x_in.reshape(batch, length), known.reshape(batch, length)

    # Row K is the absorbing value; sizing the table by the input ids keeps lookups in range
    # (an out-of-range jnp.take silently yields NaN). The input sum starts the float32 residual stream.
    h = layers.embed(num_inputs, self.emb_dim, dtype=jnp.float32, name="token_embed")(x_in)
    if self.positions == "learned":
      pos_LxE = self.param(
        "pos_embed",
        layers.partitioned(nn.initializers.normal(0.02), ("length_pos", "embed")),
        (length, self.emb_dim),
        jnp.float32,
      )
      h = h + pos_LxE[None, :, :]
    elif self.positions == "sinusoidal":
      h = h + layers.sinusoidal_embedding(jnp.arange(length), self.emb_dim, endpoint=True)[None, :, :]
    if self.mask_input:
      h = h + layers.embed(2, self.emb_dim, dtype=jnp.float32, name="known_embed")(known.astype(jnp.int32))
    stage_BxS = layers.stage_onehot(self, t)
    if stage_BxS is not None:
      # A table of S rows like known_embed's two; one row per item, the same at every position.
      stage_embed = layers.embed(stage_BxS.shape[-1], self.emb_dim, dtype=jnp.float32, name="stage_embed")
      h = h + stage_embed(jnp.argmax(stage_BxS, axis=-1))[:, None, :]
    if self.time_input:
      temb_BxE = layers.TimeEmbedding(
        num_steps,
        sin_dim=self.emb_dim,
        hidden_dim=self.mlp_dim,
        out_dim=self.emb_dim,
        dtype=self.dtype,
        endpoint=self.time_endpoint,
        name="time_embed",
      )(t)
      h = h + temb_BxE.astype(jnp.float32)[:, None, :]
    h = layers.constrain(h, _ACT_3D)
    h = nn.Dropout(self.dropout)(h, deterministic=not train)

    remat = layers.remat_choice(self.remat)
    attention.check_attention_impl(self.attention_impl)
    block_cls = layers.maybe_remat(TransformerBlock, remat, "block", in_scan=self.scan_layers)
    block_kwargs = dict(
      deterministic=not train,
      dtype=self.dtype,
      causal=self.causal,
      rope=self.rope,
      attention_impl=self.attention_impl,
      remat_attention=remat == "attention",
      in_scan=self.scan_layers,
      kernel_init=self.kernel_init,
      attention_bias=self.attention_bias,
    )
    if self.scan_layers:
      body = lambda block, carry: (block(carry), None)
      stack = layers.scan_blocks(body, self.num_layers)
      h, _ = stack(block_cls(self.num_heads, self.mlp_dim, self.dropout, name="blocks", **block_kwargs), h)
    else:
      for i in range(self.num_layers):
        h = block_cls(self.num_heads, self.mlp_dim, self.dropout, name=f"block_{i}", **block_kwargs)(h)

    h = layers.layer_norm(dtype=jnp.float32, name="norm_out")(h)
    logits_BxLxK = layers.dense(
      num_outputs, ("embed", "vocab"), dtype=jnp.float32, kernel_init=self.kernel_init, name="logits"
    )(h)
    logits_BxLxK = layers.constrain(logits_BxLxK, ("batch", "act_length", "act_classes"))
    return logits_BxLxK.reshape((batch,) + tuple(self.data_shape) + (num_outputs,))
