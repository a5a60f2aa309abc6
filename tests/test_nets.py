"""Network tests on tiny sizes: interface, partitioning metadata, dependence structure."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardm_jax.nets import build_network
from ardm_jax.nets import layers

UNET_CFG = dict(name='unet', ch=16, num_res_blocks=1, input_embed_dim=4, num_heads=2)
UNET_SHAPE, UNET_K = (8, 8, 1), 17
TF_CFG = dict(name='transformer', num_layers=2, emb_dim=32, mlp_dim=64, num_heads=4)
TF_SHAPE, TF_K = (16,), 27
NETS = {'unet': (UNET_CFG, UNET_SHAPE, UNET_K), 'transformer': (TF_CFG, TF_SHAPE, TF_K)}
B = 2


def _build(kind, **overrides):
  cfg, shape, k = NETS[kind]
  return build_network(ml_collections.ConfigDict({**cfg, **overrides}), shape, k), shape, k


def _inputs(shape, k, seed=0):
  """Random items with a random known set; unknown positions hold the absorbing value K."""
  kx, km = jax.random.split(jax.random.key(seed))
  x = jax.random.randint(kx, (B, *shape), 0, k)
  known = jax.random.bernoulli(km, 0.5, (B, *shape))
  x_in = jnp.where(known, x, k).astype(jnp.int32)
  t = known.reshape(B, -1).sum(-1).astype(jnp.int32)
  return x_in, known, t


def _abstract_init(net, shape, k):
  """Boxed (annotated) param shapes, traced without running any initializer."""
  x_in, known, t = _inputs(shape, k)
  return jax.eval_shape(lambda: net.init({'params': jax.random.key(0)}, x_in, known, t))


def _random_params(abstract, seed=1):
  """Random params of the right shapes. Random rather than the real init: the U-Net's
  zero-initialised residual/output convs would hide the dependence structure that the
  tests probe. One flat draw keeps the compile small."""
  leaves, treedef = jax.tree.flatten(nn.unbox(abstract)['params'])
  sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
  flat = 0.3 * jax.random.normal(jax.random.key(seed), (sum(sizes),))
  chunks = jnp.split(flat, np.cumsum(sizes)[:-1])
  return {'params': treedef.unflatten([c.reshape(leaf.shape) for c, leaf in zip(chunks, leaves)])}


class Built:
  """One tiny net, its abstract boxed init output, random params and a compiled eval
  apply; shared by the tests so each network compiles as few times as possible."""

  def __init__(self, kind):
    self.kind = kind
    self.net, self.shape, self.k = _build(kind)
    self.boxed = _abstract_init(self.net, self.shape, self.k)
    self.variables = _random_params(self.boxed)
    net = self.net
    self.apply = jax.jit(lambda v, x_in, known, t: net.apply(v, x_in, known, t))
    self.table = 'input_embed' if kind == 'unet' else 'token_embed'
    self.embed_dim = UNET_CFG['input_embed_dim'] if kind == 'unet' else TF_CFG['emb_dim']


@pytest.fixture(scope='module', params=list(NETS))
def built(request):
  return Built(request.param)


def test_output_shape_dtype_and_finite(built):
  x_in, known, t = _inputs(built.shape, built.k)
  logits = built.apply(built.variables, x_in, known, t)
  assert logits.shape == (B, *built.shape, built.k)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_input_table_includes_absorbing_class_and_all_absorbing_input_works(built):
  assert built.variables['params'][built.table]['embedding'].shape[0] == built.k + 1
  x_in = jnp.full((B, *built.shape), built.k, jnp.int32)
  known = jnp.zeros((B, *built.shape), bool)
  logits = built.apply(built.variables, x_in, known, jnp.zeros((B,), jnp.int32))
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_every_param_has_logical_names_of_its_rank(built):
  assert set(built.boxed) == {'params'}
  boxes = jax.tree.leaves(built.boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  specs = jax.tree.leaves(nn.get_partition_spec(built.boxed),
                          is_leaf=lambda v: isinstance(v, jax.sharding.PartitionSpec))
  assert len(boxes) == len(specs) > 10
  allowed = set(layers.PARAM_AXIS_NAMES)
  for box, spec in zip(boxes, specs):
    assert isinstance(box, nn.LogicallyPartitioned), box
    assert box.value.dtype == jnp.float32
    assert len(spec) == box.value.ndim, (spec, box.value.shape)
    assert set(spec) <= allowed, spec
    assert len(set(spec)) == len(spec), f'repeated axis name in {spec}'


def test_depends_on_t_and_known_mask(built):
  x_in, known, t = _inputs(built.shape, built.k)
  base = built.apply(built.variables, x_in, known, t)
  assert float(jnp.max(jnp.abs(built.apply(built.variables, x_in, known, t + 1) - base))) > 1e-4
  # Flip the mask only where the value is real, so the mask is the only changed input.
  flip = (x_in < built.k) & (jnp.arange(x_in.size).reshape(x_in.shape) % 3 == 0)
  assert bool(jnp.any(flip))
  changed = built.apply(built.variables, x_in, known ^ flip, t)
  assert float(jnp.max(jnp.abs(changed - base))) > 1e-4


def test_first_position_sees_last_and_items_do_not_interact(built):
  """d(item 0's logits at position 0) / d(input embedding) at every position.

  An interceptor adds a zero offset to the embedding module's output, so the net
  needs no test hook of its own. Non-zero at the last position: no causal mask in
  the Transformer, and attention reaches the far corner in the U-Net."""
  x_in, known, t = _inputs(built.shape, built.k)

  def logit_at_0(delta):
    def add_delta(next_fn, args, kwargs, context):
      out = next_fn(*args, **kwargs)
      if context.module.name == built.table and context.method_name == '__call__':
        out = out + delta.astype(out.dtype)
      return out
    with nn.intercept_methods(add_delta):
      logits = built.net.apply(built.variables, x_in, known, t)
    return logits[0].reshape(-1, built.k)[0].sum()

  g = jax.jit(jax.grad(logit_at_0))(jnp.zeros((*x_in.shape, built.embed_dim)))
  g_BxDxE = g.reshape(B, -1, built.embed_dim)
  assert float(jnp.abs(g_BxDxE[0, -1]).max()) > 0, 'position 0 does not see the last position'
  assert float(jnp.abs(g_BxDxE[0, 0]).max()) > 0
  assert float(jnp.abs(g_BxDxE[1]).max()) == 0, 'items in a batch interact'


def test_bfloat16_compute_returns_float32_logits(built):
  net, _, _ = _build(built.kind, dtype='bfloat16')
  x_in, known, t = _inputs(built.shape, built.k)
  abstract = _abstract_init(net, built.shape, built.k)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(abstract)))
  logits = jax.jit(net.apply)(built.variables, x_in, known, t)
  assert logits.dtype == jnp.float32 and logits.shape == (B, *built.shape, built.k)
  assert bool(jnp.all(jnp.isfinite(logits)))
  ref = built.apply(built.variables, x_in, known, t)
  assert float(jnp.max(jnp.abs(logits - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))


def test_remat_is_applied_and_keeps_params_and_outputs(built):
  net_remat, _, _ = _build(built.kind, remat=True)
  x_in, known, t = _inputs(built.shape, built.k)
  loss = lambda n: (lambda p: jnp.sum(n.apply({'params': p}, x_in, known, t) ** 2))
  params = built.variables['params']
  assert 'remat' in str(jax.make_jaxpr(jax.grad(loss(net_remat)))(params))
  assert 'remat' not in str(jax.make_jaxpr(jax.grad(loss(built.net)))(params))
  # Same param tree, so a checkpoint trained either way restores into the other.
  np.testing.assert_allclose(jax.jit(net_remat.apply)(built.variables, x_in, known, t),
                             built.apply(built.variables, x_in, known, t), rtol=1e-5, atol=1e-5)


def test_real_init_runs_and_dropout_is_active_only_in_training():
  net, shape, k = _build('transformer', dropout=0.5)
  x_in, known, t = _inputs(shape, k)
  variables = jax.jit(lambda key: net.init({'params': key}, x_in, known, t))(jax.random.key(0))
  abstract = _abstract_init(net, shape, k)
  assert jax.tree.structure(variables) == jax.tree.structure(abstract)
  run = jax.jit(lambda key, train: net.apply(variables, x_in, known, t, train=train,
                                             rngs={'dropout': key}), static_argnums=1)
  eval_a, eval_b = run(jax.random.key(3), False), run(jax.random.key(4), False)
  np.testing.assert_array_equal(eval_a, eval_b)
  assert float(jnp.max(jnp.abs(run(jax.random.key(3), True) - eval_a))) > 1e-3


def test_activation_constraints_only_with_rules(built):
  x_in, known, t = _inputs(built.shape, built.k)
  fn = lambda v: built.net.apply(v, x_in, known, t)
  init = lambda: built.net.init({'params': jax.random.key(0)}, x_in, known, t)
  assert 'sharding_constraint' not in str(jax.make_jaxpr(fn)(built.variables))

  # Every name in use must be resolvable, and every annotation must match its array's
  # rank under a mesh (init included): a mismatch fails at trace time.
  act_names = ['batch', 'act_length', 'act_height', 'act_width', 'act_embed', 'act_mlp',
               'act_heads', 'act_kv', 'act_classes']
  rules = [(n, 'data' if n == 'batch' else None) for n in act_names + list(layers.PARAM_AXIS_NAMES)]
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  # flax only sees a mesh set with jax.set_mesh; the legacy `with mesh:` is ignored.
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    assert len(jax.tree.leaves(shardings)) == len(jax.tree.leaves(built.variables))
    assert 'sharding_constraint' in str(jax.make_jaxpr(fn)(built.variables))
    jax.jit(fn).lower(built.variables)


def test_build_network_rejects_bad_configs():
  cfg = ml_collections.ConfigDict
  with pytest.raises(ValueError, match='unknown model.name'):
    build_network(cfg({**UNET_CFG, 'name': 'resnet'}), UNET_SHAPE, UNET_K)
  with pytest.raises(ValueError, match='data_shape'):
    build_network(cfg(UNET_CFG), TF_SHAPE, TF_K)
  with pytest.raises(ValueError, match='data_shape'):
    build_network(cfg(TF_CFG), (0,), TF_K)
  with pytest.raises(ValueError, match='unknown model config key'):
    build_network(cfg({**TF_CFG, 'atention': True}), TF_SHAPE, TF_K)
  missing = dict(TF_CFG)
  del missing['mlp_dim']
  with pytest.raises(ValueError, match='missing'):
    build_network(cfg(missing), TF_SHAPE, TF_K)
  with pytest.raises(ValueError, match='dtype'):
    build_network(cfg({**TF_CFG, 'dtype': 'float16'}), TF_SHAPE, TF_K)


def test_wrong_input_shape_is_a_clear_error():
  net, shape, k = _build('transformer')
  variables = _random_params(_abstract_init(net, shape, k))
  x_in, known, t = _inputs(shape, k)
  with pytest.raises(ValueError, match='x_in has shape'):
    jax.eval_shape(net.apply, variables, x_in[:, :-1], known[:, :-1], t)


def test_sinusoidal_embedding_distinguishes_steps():
  e = np.asarray(layers.sinusoidal_embedding(jnp.arange(64.0), 32))
  assert e.shape == (64, 32)
  dist = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=-1)
  assert dist[~np.eye(64, dtype=bool)].min() > 0.1


def test_rotary_scores_depend_on_relative_position_only():
  from ardm_jax.nets.layers import rotary
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 12, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 12, 2, 8))
  same_q = jnp.broadcast_to(q[:, :1], q.shape)  # one query vector at every position
  same_k = jnp.broadcast_to(k[:, :1], k.shape)
  scores = jnp.einsum('bqhk,bnhk->bhqn', rotary(same_q), rotary(same_k))[0, 0]
  for offset in (0, 3, -2):
    diag = jnp.diagonal(scores, offset=offset)
    np.testing.assert_allclose(diag, diag[0], rtol=1e-4, atol=1e-5)
  assert abs(float(scores[0, 1] - scores[0, 5])) > 1e-3  # and it does depend on the offset
  np.testing.assert_allclose(jnp.linalg.norm(rotary(q), axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
