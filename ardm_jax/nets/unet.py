"""Single-resolution U-Net for images (the ARDM CIFAR-10 network).

The paper's image model never changes resolution (ch_mult=[1]) but keeps the DDPM
U-Net wiring: the activations of the "down" half are stored and concatenated, last
first, into the "up" half, which has one block more than the down half (the extra
one consumes the input-conv activation). With num_res_blocks=N that is
N down blocks, a middle ResBlock-Attn-ResBlock, and N+1 up blocks.

Input layer: by default a learned vector per sub-pixel id plus the known-mask, through conv_in. With
`input_numeric=True` it is the official one: a conv3x3 over the values as numbers on [-1, 1] and the mask gives
3/4 of the channels, and a learned embedding of the ids (flattened over the colour channels, then Dense) the other
1/4, so the net need not learn the order of 256 values from data while the absorbing value stays distinct. With
`stage_input=True` an upscale model's mask gets S more channels, a one-hot of the stage, as in the official model.

Numerics: with a bf16 compute dtype the residual stream (every block's output, the skip activations) and the
output head stay float32, so 67 residual additions and the logits are not rounded to bf16.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ardm_jax.nets import attention, layers

_ACT_4D = ("batch", "act_height", "act_width", "act_embed")


class ResBlock(nn.Module):
  """GroupNorm-swish-conv, + time projection, GroupNorm-swish-dropout-conv(zero init), + skip.

  Attributes:
    out_ch: output channels; a 1x1 conv projects the skip when the input has others.
    dropout: dropout rate before the last conv.
    deterministic: no dropout; an attribute, not a call argument, so nn.remat needs no static args.
    dtype: compute dtype of the branch (the sum with the skip is float32).
  """

  out_ch: int
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, temb_BxT: jax.Array) -> jax.Array:
    """x [B, H, W, C_in], time embedding temb [B, T] -> float32 [B, H, W, out_ch]."""
    in_ch = x_BxHxWxC.shape[-1]
    h = nn.swish(layers.group_norm(in_ch, dtype=self.dtype, name="norm_0")(x_BxHxWxC))
    h = layers.conv3x3(self.out_ch, dtype=self.dtype, name="conv_0")(h)
    t_BxO = layers.dense(self.out_ch, ("mlp", "embed"), dtype=self.dtype, name="time_proj")(nn.swish(temb_BxT))
    h = h + t_BxO[:, None, None, :]
    h = nn.swish(layers.group_norm(self.out_ch, dtype=self.dtype, name="norm_1")(h))
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    # Zero init makes every block start as the identity, so depth does not blow up
    # the initial activations.
    h = layers.conv3x3(self.out_ch, dtype=self.dtype, zero_init=True, name="conv_1")(h)
    if in_ch != self.out_ch:
      # This projection replaces the (float32) stream, so it runs in float32 too.
      x_BxHxWxC = layers.conv(self.out_ch, (1, 1), dtype=jnp.float32, name="skip")(x_BxHxWxC)
    return layers.constrain(x_BxHxWxC.astype(jnp.float32) + h.astype(jnp.float32), _ACT_4D)


class AttnBlock(nn.Module):
  """GroupNorm -> self-attention over all H*W positions -> zero-init projection, + residual.

  Attributes:
    num_heads: attention heads; must divide C.
    dtype: compute dtype of the branch (the residual sum is float32).
    attention_impl: one of attention.ATTENTION_IMPLS.
  """

  num_heads: int
  dtype: Any = jnp.float32
  attention_impl: str = "plain"

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    """x [B, H, W, C] -> float32 [B, H, W, C]."""
    b, hh, ww, c = x_BxHxWxC.shape
    h = layers.group_norm(c, dtype=self.dtype, name="norm")(x_BxHxWxC)
    h_BxNxC = layers.constrain(h.reshape(b, hh * ww, c), ("batch", "act_length", "act_embed"))
    h_BxNxC = attention.SelfAttention(
      self.num_heads, dtype=self.dtype, zero_init_out=True, impl=self.attention_impl, name="attn"
    )(h_BxNxC)
    h = h_BxNxC.reshape(b, hh, ww, c).astype(jnp.float32)
    return layers.constrain(x_BxHxWxC.astype(jnp.float32) + h, _ACT_4D)


class ResAttn(nn.Module):
  """ResBlock then (with attention) AttnBlock: the unit that repeats through each half of the U-Net, and that
  model.scan_layers scans (parameters stacked under 'down/res', 'down/attn', 'up/res', 'up/attn').

  Attributes:
    ch: output channels.
    num_heads: attention heads.
    attention: whether the AttnBlock follows.
    dropout: the ResBlock's dropout rate.
    deterministic: no dropout.
    dtype: compute dtype.
    remat: one of layers.REMAT_CHOICES, applied to each block.
    attention_impl: one of attention.ATTENTION_IMPLS.
    in_scan: the unit is the body of nn.scan (see layers.maybe_remat).
  """

  ch: int
  num_heads: int
  attention: bool
  dropout: float
  deterministic: bool
  dtype: Any = jnp.float32
  remat: bool | str = False
  attention_impl: str = "plain"
  in_scan: bool = False

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, temb_BxT: jax.Array) -> jax.Array:
    """x [B, H, W, C_in], time embedding temb [B, T] -> float32 [B, H, W, ch]."""
    res_cls = layers.maybe_remat(ResBlock, self.remat, "block", in_scan=self.in_scan)
    h = res_cls(self.ch, self.dropout, deterministic=self.deterministic, dtype=self.dtype, name="res")(
      x_BxHxWxC, temb_BxT
    )
    if self.attention:
      attn_cls = layers.maybe_remat(AttnBlock, self.remat, "attention", in_scan=self.in_scan)
      h = attn_cls(self.num_heads, dtype=self.dtype, attention_impl=self.attention_impl, name="attn")(h)
    return h


class UNet(nn.Module):
  """x_in [B,H,W,C] in 0..K (K absorbing), known [B,H,W,C], t [B] -> logits f32 [B,H,W,C,K].

  num_outputs (default K), num_input_classes (default K + 1) and num_steps (default D) serve other output
  distributions and upscale ARDMs (which see S * D steps and every coarse state as an input id).

  Attributes:
    num_classes: K data classes.
    data_shape: (H, W, C).
    ch: channels at the single resolution (divisible by 4 with input_numeric).
    num_res_blocks: N; the U-Net has N down units, the middle and N + 1 up units.
    input_embed_dim: width of each sub-pixel id's learned vector.
    num_heads: attention heads.
    attention: AttnBlocks after the ResBlocks of both halves and in the middle; False leaves them all out.
    dropout: dropout rate in every ResBlock (only with train=True).
    dtype: compute dtype; the residual stream and the output head stay float32.
    remat: one of layers.REMAT_CHOICES; True / False read as 'full' / 'none'.
    attention_impl: one of attention.ATTENTION_IMPLS.
    scan_layers: nn.scan over the N down and the N + 1 up ResBlock(+Attn) units, whose shapes repeat; False
      keeps the unrolled layout (down_res_i, down_attn_i, up_res_i, up_attn_i) of older checkpoints. The middle
      blocks stay unrolled.
    input_numeric: the official input layer (module docstring); False keeps older checkpoints' layout.
    stage_input: with num_stages S > 1, a one-hot of the stage s = t // (num_steps / S) as S more mask channels
      into conv_in; False (and S = 1) keeps older checkpoints' layout.
    input_embed_std: the standard deviation of the id embedding's initial entries (N(0, input_embed_std^2)).
    time_endpoint: the time embedding's frequency spacing (layers.sinusoidal_embedding's `endpoint`).
    num_outputs: outputs per variable; None: K.
    num_input_classes: rows of the input id table; None: K + 1.
    num_steps: range of t for the time embedding; None: D = H * W * C.
    num_stages: S, the upscale stages (t = s * D + t within the stage); None: 1.
  """

  num_classes: int
  data_shape: tuple[int, int, int]
  ch: int
  num_res_blocks: int
  input_embed_dim: int
  num_heads: int = 1
  attention: bool = True
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool | str = False
  attention_impl: str = "plain"
  scan_layers: bool = False
  input_numeric: bool = False
  stage_input: bool = False
  input_embed_std: float = 1.0
  time_endpoint: bool = False
  num_outputs: int | None = None
  num_input_classes: int | None = None
  num_steps: int | None = None
  num_stages: int | None = None

  @nn.compact
  def __call__(self, x_in: jax.Array, known: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    """One network call on a batch of partially known images.

    Args:
      x_in: int [B, H, W, C] ids in 0..num_input_classes-1 (data values below K, the absorbing value K).
      known: bool [B, H, W, C], the known-mask.
      t: int [B] steps in 0..num_steps-1.
      train: dropout on (needs a 'dropout' rng).

    Returns:
      float32 [B, H, W, C, num_outputs]; all zeros at initialisation (the output conv starts at zero).

    Raises:
      ValueError: for inputs of the wrong shape or dtype, input_numeric with ch not divisible by 4, or an unknown
        remat or attention_impl.
    """
    hh, ww, cc = self.data_shape
    k, num_inputs, num_steps = layers.output_input_step_sizes(self)
    layers.check_inputs(x_in, known, t, self.data_shape)
    b = x_in.shape[0]

    temb_BxT = layers.TimeEmbedding(
      num_steps,
      sin_dim=self.ch,
      hidden_dim=4 * self.ch,
      out_dim=4 * self.ch,
      dtype=self.dtype,
      endpoint=self.time_endpoint,
      name="time_embed",
    )(t)

    # Each sub-pixel gets its own learned vector (absorbing value K / coarse states included), and the
    # known-mask is fed explicitly so the net never has to infer it from the values.
    e_BxHxWxCxE = layers.embed(
      num_inputs, self.input_embed_dim, dtype=self.dtype, stddev=self.input_embed_std, name="input_embed"
    )(x_in)
    # The mask channels: the known-mask, then (stage_input) the stage one-hot at every pixel, in the official order.
    mask_BxHxWxM = known.astype(jnp.float32)
    stage_BxS = layers.stage_onehot(self, t)
    if stage_BxS is not None:
      stage_BxHxWxS = jnp.broadcast_to(stage_BxS[:, None, None, :], (b, hh, ww, stage_BxS.shape[-1]))
      mask_BxHxWxM = jnp.concatenate([mask_BxHxWxM, stage_BxHxWxS], axis=-1)
    e_BxHxWxCE = e_BxHxWxCxE.reshape(b, hh, ww, cc * self.input_embed_dim)
    if self.input_numeric:
      if self.ch % 4:
        raise ValueError(
          f"model.input_numeric needs model.ch divisible by 4 (3/4 numeric channels, 1/4 "
          f"embedding), got {self.ch}; use e.g. 64 or 256"
        )
      numeric_BxHxWxCM = jnp.concatenate([layers.numeric_value(x_in, self.num_classes), mask_BxHxWxM], axis=-1)
      h_num = layers.conv3x3(3 * self.ch // 4, dtype=self.dtype, name="conv_in")(numeric_BxHxWxCM.astype(self.dtype))
      h_emb = layers.dense(self.ch // 4, ("conv_in", "embed"), dtype=self.dtype, name="input_embed_proj")(e_BxHxWxCE)
      h = jnp.concatenate([h_num, h_emb], axis=-1)
    else:
      h = jnp.concatenate([e_BxHxWxCE, mask_BxHxWxM.astype(self.dtype)], axis=-1)
      h = layers.conv3x3(self.ch, dtype=self.dtype, name="conv_in")(h)
    h = layers.constrain(h.astype(jnp.float32), _ACT_4D)

    remat = layers.remat_choice(self.remat)
    attention.check_attention_impl(self.attention_impl)
    unit_kwargs = dict(
      num_heads=self.num_heads,
      attention=self.attention,
      dropout=self.dropout,
      deterministic=not train,
      dtype=self.dtype,
      remat=remat,
      attention_impl=self.attention_impl,
    )
    res_cls = layers.maybe_remat(ResBlock, remat, "block")
    attn_cls = layers.maybe_remat(AttnBlock, remat, "attention")

    def res(x, name):
      return res_cls(self.ch, self.dropout, deterministic=not train, dtype=self.dtype, name=name)(x, temb_BxT)

    def attn(x, name):
      if not self.attention:
        return x
      return attn_cls(self.num_heads, dtype=self.dtype, attention_impl=self.attention_impl, name=name)(x)

    n = self.num_res_blocks
    if self.scan_layers:
      # Down: carry h, emit every unit's output (the skips). Up: unit i reads the skips last-first.
      skips_SxBxHxWxC = h[None]
      if n:
        down = layers.scan_blocks(lambda mdl, x, temb: (mdl(x, temb),) * 2, n, in_axes=(nn.broadcast,))
        h, outs_NxBxHxWxC = down(ResAttn(self.ch, in_scan=True, name="down", **unit_kwargs), h, temb_BxT)
        skips_SxBxHxWxC = jnp.concatenate([skips_SxBxHxWxC, outs_NxBxHxWxC], axis=0)
    else:
      skips = [h]
      for i in range(n):
        h = attn(res(h, f"down_res_{i}"), f"down_attn_{i}")
        skips.append(h)

    h = res(h, "mid_res_0")
    h = attn(h, "mid_attn")
    h = res(h, "mid_res_1")

    if self.scan_layers:

      def up_body(mdl, x, skip, temb):
        return mdl(jnp.concatenate([x, skip], axis=-1), temb), None

      up = layers.scan_blocks(up_body, n + 1, in_axes=(0, nn.broadcast))
      h, _ = up(ResAttn(self.ch, in_scan=True, name="up", **unit_kwargs), h, skips_SxBxHxWxC[::-1], temb_BxT)
    else:
      for i in range(n + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = attn(res(h, f"up_res_{i}"), f"up_attn_{i}")

    # The output head runs in float32: bf16 logits would cost likelihood directly.
    h = nn.swish(layers.group_norm(self.ch, dtype=jnp.float32, name="norm_out")(h))
    # Zero init: the untrained net predicts uniform distributions (loss log K per variable).
    logits = layers.conv3x3(cc * k, dtype=jnp.float32, out_axis="vocab", zero_init=True, name="conv_out")(h)
    logits_BxHxWxCxK = logits.reshape(b, hh, ww, cc, k)
    return layers.constrain(logits_BxHxWxCxK, ("batch", "act_height", "act_width", None, "act_classes"))
