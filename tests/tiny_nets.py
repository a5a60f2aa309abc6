"""Tiny networks and inputs shared by the network tests (test_nets, test_stage_input)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

UNET_CFG = dict(name="unet", ch=16, num_res_blocks=1, input_embed_dim=4, num_heads=2)
UNET_SHAPE, UNET_K = (8, 8, 1), 17
TF_CFG = dict(name="transformer", num_layers=2, emb_dim=32, mlp_dim=64, num_heads=4)
TF_SHAPE, TF_K = (16,), 27
NETS = {"unet": (UNET_CFG, UNET_SHAPE, UNET_K), "transformer": (TF_CFG, TF_SHAPE, TF_K)}
B = 2


def inputs(shape, k, seed=0):
  """Random items with a random known set; unknown positions hold the absorbing value K."""
  kx, km = jax.random.split(jax.random.key(seed))
  x = jax.random.randint(kx, (B, *shape), 0, k)
  known = jax.random.bernoulli(km, 0.5, (B, *shape))
  x_in = jnp.where(known, x, k).astype(jnp.int32)
  t = known.reshape(B, -1).sum(-1).astype(jnp.int32)
  return x_in, known, t


def abstract_init(net, shape, k):
  """Boxed (annotated) param shapes, traced without running any initializer."""
  x_in, known, t = inputs(shape, k)
  return jax.eval_shape(lambda: net.init({"params": jax.random.key(0)}, x_in, known, t))


def random_params(abstract, seed=1):
  """Random params of the right shapes. Random rather than the real init: the U-Net's
  zero-initialised residual/output convs would hide the dependence structure that the
  tests probe. One flat draw keeps the compile small."""
  leaves, treedef = jax.tree.flatten(nn.unbox(abstract)["params"])
  sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
  flat = 0.3 * jax.random.normal(jax.random.key(seed), (sum(sizes),))
  chunks = jnp.split(flat, np.cumsum(sizes)[:-1])
  return {"params": treedef.unflatten([c.reshape(leaf.shape) for c, leaf in zip(chunks, leaves)])}
