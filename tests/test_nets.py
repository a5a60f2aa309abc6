"""Network tests on tiny sizes: interface, partitioning metadata, dependence structure."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny_nets import (
  NETS,
  TF_CFG,
  TF_K,
  TF_SHAPE,
  UNET_CFG,
  UNET_K,
  UNET_SHAPE,
  B,
  abstract_init,
  inputs,
  random_params,
)

from ardm_jax.nets import attention, build_network, layers


def _build(kind, **overrides):
  cfg, shape, k = NETS[kind]
  return build_network(ml_collections.ConfigDict({**cfg, **overrides}), shape, k), shape, k


class Built:
  """One tiny net, its abstract boxed init output, random params and a compiled eval
  apply; shared by the tests so each network compiles as few times as possible."""

  def __init__(self, kind):
    self.kind = kind
    self.net, self.shape, self.k = _build(kind)
    self.boxed = abstract_init(self.net, self.shape, self.k)
    self.variables = random_params(self.boxed)
    net = self.net
    self.apply = jax.jit(lambda v, x_in, known, t: net.apply(v, x_in, known, t))
    self.table = "input_embed" if kind == "unet" else "token_embed"
    self.embed_dim = UNET_CFG["input_embed_dim"] if kind == "unet" else TF_CFG["emb_dim"]


@pytest.fixture(scope="module", params=list(NETS))
def built(request):
  return Built(request.param)


def test_output_shape_dtype_and_finite(built):
  x_in, known, t = inputs(built.shape, built.k)
  logits = built.apply(built.variables, x_in, known, t)
  assert logits.shape == (B, *built.shape, built.k)
  assert logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_input_table_includes_absorbing_class_and_all_absorbing_input_works(built):
  assert built.variables["params"][built.table]["embedding"].shape[0] == built.k + 1
  x_in = jnp.full((B, *built.shape), built.k, jnp.int32)
  known = jnp.zeros((B, *built.shape), bool)
  logits = built.apply(built.variables, x_in, known, jnp.zeros((B,), jnp.int32))
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_every_param_has_logical_names_of_its_rank(built):
  assert set(built.boxed) == {"params"}
  boxes = jax.tree.leaves(built.boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  specs = jax.tree.leaves(
    nn.get_partition_spec(built.boxed), is_leaf=lambda v: isinstance(v, jax.sharding.PartitionSpec)
  )
  assert len(boxes) == len(specs) > 10
  allowed = set(layers.PARAM_AXIS_NAMES)
  for box, spec in zip(boxes, specs):
    assert isinstance(box, nn.LogicallyPartitioned), box
    assert box.value.dtype == jnp.float32
    assert len(spec) == box.value.ndim, (spec, box.value.shape)
    assert set(spec) <= allowed, spec
    assert len(set(spec)) == len(spec), f"repeated axis name in {spec}"


def test_depends_on_t_and_known_mask(built):
  x_in, known, t = inputs(built.shape, built.k)
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
  x_in, known, t = inputs(built.shape, built.k)

  def logit_at_0(delta):
    def add_delta(next_fn, args, kwargs, context):
      out = next_fn(*args, **kwargs)
      if context.module.name == built.table and context.method_name == "__call__":
        out = out + delta.astype(out.dtype)
      return out

    with nn.intercept_methods(add_delta):
      logits = built.net.apply(built.variables, x_in, known, t)
    return logits[0].reshape(-1, built.k)[0].sum()

  g = jax.jit(jax.grad(logit_at_0))(jnp.zeros((*x_in.shape, built.embed_dim)))
  g_BxDxE = g.reshape(B, -1, built.embed_dim)
  assert float(jnp.abs(g_BxDxE[0, -1]).max()) > 0, "position 0 does not see the last position"
  assert float(jnp.abs(g_BxDxE[0, 0]).max()) > 0
  assert float(jnp.abs(g_BxDxE[1]).max()) == 0, "items in a batch interact"


def _module_output_dtypes(net, variables, *args):
  """(logits, {module path: dtype of its first output}) from one apply with captured intermediates."""
  logits, state = jax.jit(lambda v: net.apply(v, *args, capture_intermediates=True, mutable=["intermediates"]))(
    variables
  )
  flat = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
  dtypes = {}
  for path, leaf in flat:
    keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    dtypes.setdefault("/".join(k for k in keys if k != "__call__"), leaf.dtype)
  return logits, dtypes


# Modules whose outputs carry the residual stream or the logits (float32 under bf16 compute), and modules inside a
# residual branch (still bf16), per network.
_FLOAT32_OUTPUTS = {
  "transformer": ("block_0", "block_1", "norm_out", "logits"),
  "unet": ("down_res_0", "down_attn_0", "mid_res_1", "up_res_1", "norm_out", "conv_out"),
}
_BF16_OUTPUTS = {"transformer": ("block_0/mlp", "block_1/attn"), "unet": ("down_res_0/conv_1", "mid_attn/attn")}


def test_bfloat16_compute_returns_float32_logits(built):
  net, _, _ = _build(built.kind, dtype="bfloat16")
  x_in, known, t = inputs(built.shape, built.k)
  abstract = abstract_init(net, built.shape, built.k)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(abstract)))
  logits, dtypes = _module_output_dtypes(net, built.variables, x_in, known, t)
  # The residual stream and the logits layer are float32 while the branches compute in bf16.
  for name in _FLOAT32_OUTPUTS[built.kind]:
    assert dtypes[name] == jnp.float32, (name, dtypes[name])
  for name in _BF16_OUTPUTS[built.kind]:
    assert dtypes[name] == jnp.bfloat16, (name, dtypes[name])
  assert logits.dtype == jnp.float32 and logits.shape == (B, *built.shape, built.k)
  assert bool(jnp.all(jnp.isfinite(logits)))
  ref = built.apply(built.variables, x_in, known, t)
  assert float(jnp.max(jnp.abs(logits - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))


def test_remat_is_applied_and_keeps_params_and_outputs(built):
  net_remat, _, _ = _build(built.kind, remat=True)
  x_in, known, t = inputs(built.shape, built.k)
  loss = lambda n: lambda p: jnp.sum(n.apply({"params": p}, x_in, known, t) ** 2)
  params = built.variables["params"]
  assert "remat" in str(jax.make_jaxpr(jax.grad(loss(net_remat)))(params))
  assert "remat" not in str(jax.make_jaxpr(jax.grad(loss(built.net)))(params))
  # Same param tree, so a checkpoint trained either way restores into the other.
  np.testing.assert_allclose(
    jax.jit(net_remat.apply)(built.variables, x_in, known, t),
    built.apply(built.variables, x_in, known, t),
    rtol=1e-5,
    atol=1e-5,
  )


def test_real_init_runs_and_dropout_is_active_only_in_training():
  net, shape, k = _build("transformer", dropout=0.5)
  x_in, known, t = inputs(shape, k)
  variables = jax.jit(lambda key: net.init({"params": key}, x_in, known, t))(jax.random.key(0))
  abstract = abstract_init(net, shape, k)
  assert jax.tree.structure(variables) == jax.tree.structure(abstract)
  run = jax.jit(
    lambda key, train: net.apply(variables, x_in, known, t, train=train, rngs={"dropout": key}), static_argnums=1
  )
  eval_a, eval_b = run(jax.random.key(3), False), run(jax.random.key(4), False)
  np.testing.assert_array_equal(eval_a, eval_b)
  assert float(jnp.max(jnp.abs(run(jax.random.key(3), True) - eval_a))) > 1e-3


def test_activation_constraints_only_with_rules(built):
  x_in, known, t = inputs(built.shape, built.k)
  fn = lambda v: built.net.apply(v, x_in, known, t)
  init = lambda: built.net.init({"params": jax.random.key(0)}, x_in, known, t)
  assert "sharding_constraint" not in str(jax.make_jaxpr(fn)(built.variables))

  # Every name in use must be resolvable, and every annotation must match its array's
  # rank under a mesh (init included): a mismatch fails at trace time.
  act_names = [
    "batch",
    "act_length",
    "act_height",
    "act_width",
    "act_embed",
    "act_mlp",
    "act_heads",
    "act_kv",
    "act_classes",
  ]
  rules = [(n, "data" if n == "batch" else None) for n in act_names + list(layers.PARAM_AXIS_NAMES)]
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  # flax only sees a mesh set with jax.set_mesh; the legacy `with mesh:` is ignored.
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    assert len(jax.tree.leaves(shardings)) == len(jax.tree.leaves(built.variables))
    assert "sharding_constraint" in str(jax.make_jaxpr(fn)(built.variables))
    jax.jit(fn).lower(built.variables)


def test_build_network_rejects_bad_configs():
  cfg = ml_collections.ConfigDict
  with pytest.raises(ValueError, match="unknown model.name"):
    build_network(cfg({**UNET_CFG, "name": "resnet"}), UNET_SHAPE, UNET_K)
  with pytest.raises(ValueError, match="data_shape"):
    build_network(cfg(UNET_CFG), TF_SHAPE, TF_K)
  with pytest.raises(ValueError, match="data_shape"):
    build_network(cfg(TF_CFG), (0,), TF_K)
  with pytest.raises(ValueError, match="unknown model config key"):
    build_network(cfg({**TF_CFG, "atention": True}), TF_SHAPE, TF_K)
  missing = dict(TF_CFG)
  del missing["mlp_dim"]
  with pytest.raises(ValueError, match="missing"):
    build_network(cfg(missing), TF_SHAPE, TF_K)
  with pytest.raises(ValueError, match="dtype"):
    build_network(cfg({**TF_CFG, "dtype": "float16"}), TF_SHAPE, TF_K)


def test_wrong_input_shape_is_a_clear_error():
  net, shape, k = _build("transformer")
  variables = random_params(abstract_init(net, shape, k))
  x_in, known, t = inputs(shape, k)
  with pytest.raises(ValueError, match="x_in has shape"):
    jax.eval_shape(net.apply, variables, x_in[:, :-1], known[:, :-1], t)


def test_sinusoidal_embedding_distinguishes_steps():
  e = np.asarray(layers.sinusoidal_embedding(jnp.arange(64.0), 32))
  assert e.shape == (64, 32)
  dist = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=-1)
  assert dist[~np.eye(64, dtype=bool)].min() > 0.1


def test_rotary_scores_depend_on_relative_position_only():
  from ardm_jax.nets.attention import rotary

  q = jax.random.normal(jax.random.PRNGKey(0), (1, 12, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 12, 2, 8))
  same_q = jnp.broadcast_to(q[:, :1], q.shape)  # one query vector at every position
  same_k = jnp.broadcast_to(k[:, :1], k.shape)
  scores = jnp.einsum("bqhk,bnhk->bhqn", rotary(same_q), rotary(same_k))[0, 0]
  for offset in (0, 3, -2):
    diag = jnp.diagonal(scores, offset=offset)
    np.testing.assert_allclose(diag, diag[0], rtol=1e-4, atol=1e-5)
  assert abs(float(scores[0, 1] - scores[0, 5])) > 1e-3  # and it does depend on the offset
  np.testing.assert_allclose(jnp.linalg.norm(rotary(q), axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)


def test_diffwave_bfloat16_keeps_residual_skip_and_head_in_float32():
  from ardm_jax.nets.diffwave import DiffWave

  shape, k = (32,), 16
  net = DiffWave(num_classes=k, data_shape=shape, num_blocks=2, features=16, dtype=jnp.bfloat16)
  x_in, known, t = inputs(shape, k)
  variables = random_params(abstract_init(net, shape, k))
  _, dtypes = _module_output_dtypes(net, variables, x_in, known, t)
  for name in ("block_0", "block_1", "skip_out", "out"):
    assert dtypes[name] == jnp.float32, (name, dtypes[name])
  assert dtypes["block_0/dilated_conv"] == jnp.bfloat16


def test_sinusoidal_positions_have_no_params_and_break_permutation_symmetry():
  """Without positions (and no rope) the bidirectional Transformer is permutation-equivariant; the fixed
  sinusoidal table must break that, and add no parameter."""
  x_in, known, t = inputs(TF_SHAPE, TF_K)
  perm = np.random.default_rng(0).permutation(TF_SHAPE[0])
  gaps = {}
  for positions in ("none", "sinusoidal"):
    net, _, _ = _build("transformer", positions=positions)
    boxed = abstract_init(net, TF_SHAPE, TF_K)
    assert "pos_embed" not in boxed["params"]
    variables = random_params(boxed)
    run = jax.jit(lambda xi, kn, net=net: net.apply(variables, xi, kn, t))
    gaps[positions] = float(jnp.max(jnp.abs(run(x_in[:, perm], known[:, perm]) - run(x_in, known)[:, perm])))
  assert gaps["none"] < 1e-4, gaps
  assert gaps["sinusoidal"] > 1e-2, gaps
  # The official table: [sin | cos] halves, frequencies from 1 down to exactly 1 / 10000.
  table = np.asarray(layers.sinusoidal_embedding(jnp.arange(300), 8, endpoint=True))
  np.testing.assert_allclose(table[:, 3], np.sin(np.arange(300) / 1e4), atol=1e-5)
  np.testing.assert_allclose(table[:, 4], np.cos(np.arange(300)), atol=1e-4)


def test_transformer_without_time_and_mask_inputs_has_no_such_params_or_dependence():
  net, _, _ = _build("transformer", positions="sinusoidal", time_input=False, mask_input=False)
  boxed = abstract_init(net, TF_SHAPE, TF_K)
  assert not {"time_embed", "known_embed", "pos_embed"} & set(boxed["params"])
  variables = random_params(boxed)
  x_in, known, t = inputs(TF_SHAPE, TF_K)
  run = jax.jit(lambda kn, tt: net.apply(variables, x_in, kn, tt))
  base = run(known, t)
  flip = (x_in < TF_K) & (jnp.arange(x_in.size).reshape(x_in.shape) % 3 == 0)
  np.testing.assert_array_equal(run(known ^ flip, t + 1), base)
  with pytest.raises(ValueError, match="model.positions"):
    abstract_init(_build("transformer", positions="rotary")[0], TF_SHAPE, TF_K)


def test_unet_numeric_input_layer_shapes_and_value_order():
  """With the id embedding made constant, only the numeric branch can tell value v from v + 1."""
  ch, e, (_, _, cc) = UNET_CFG["ch"], UNET_CFG["input_embed_dim"], UNET_SHAPE
  net, _, _ = _build("unet", input_numeric=True)
  variables = random_params(abstract_init(net, UNET_SHAPE, UNET_K))
  p = variables["params"]
  assert p["conv_in"]["kernel"].shape == (3, 3, 2 * cc, 3 * ch // 4)
  assert p["input_embed"]["embedding"].shape == (UNET_K + 1, e)
  assert p["input_embed_proj"]["kernel"].shape == (cc * e, ch // 4)
  x_in, known, t = inputs(UNET_SHAPE, UNET_K)
  known = known.at[0, 3, 4, 0].set(True)
  x_in, x_up = x_in.at[0, 3, 4, 0].set(5), x_in.at[0, 3, 4, 0].set(6)

  def with_constant_embedding(v):
    table = v["params"]["input_embed"]["embedding"]
    return {"params": {**v["params"], "input_embed": {"embedding": jnp.ones_like(table)}}}

  gaps = {}
  for numeric, (n, v) in {True: (net, variables), False: (None, None)}.items():
    if n is None:
      n, _, _ = _build("unet")
      v = random_params(abstract_init(n, UNET_SHAPE, UNET_K))
    run = jax.jit(lambda xi, n=n, v=with_constant_embedding(v): n.apply(v, xi, known, t))
    gaps[numeric] = float(jnp.max(jnp.abs(run(x_up) - run(x_in))))
  assert gaps[True] > 1e-3 and gaps[False] == 0.0, gaps
  with pytest.raises(ValueError, match="model.input_numeric"):
    abstract_init(_build("unet", input_numeric=True, ch=18)[0], UNET_SHAPE, UNET_K)


# --- model.remat choices, attention implementations, scanned layers -------------------------------------------


def _remat_eqns(jaxpr):
  """Every remat (jax.checkpoint) equation in a jaxpr, nested ones included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name.startswith("remat") or eqn.primitive.name == "checkpoint":
      found.append(eqn)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found.extend(_remat_eqns(sub))
  return found


@pytest.mark.parametrize("kind", list(NETS))
def test_remat_choices_wrap_the_right_blocks(kind):
  """'attention' remats the attention layers only, 'full' every block, a jax policy name every block with that
  policy; bools from older configs still work. Counts are per block of the tiny nets (U-Net: 5 ResBlocks + 4
  AttnBlocks: 1 down, 1 middle, 2 up; Transformer: 2 layers)."""
  cfg, shape, k = NETS[kind]
  x_in, known, t = inputs(shape, k)
  net0, _, _ = _build(kind)
  params = random_params(abstract_init(net0, shape, k))["params"]
  want_attn, want_full = {"unet": (4, 9), "transformer": (2, 2)}[kind]

  def remats(remat):
    net, _, _ = _build(kind, remat=remat)
    # The forward jaxpr holds one remat equation per wrapped block.
    return _remat_eqns(jax.make_jaxpr(lambda p: net.apply({"params": p}, x_in, known, t))(params).jaxpr)

  assert not remats("none") and not remats(False)
  assert len(remats("attention")) == want_attn
  assert len(remats("full")) == len(remats(True)) == want_full
  policy_eqns = remats("dots_with_no_batch_dims_saveable")
  assert len(policy_eqns) == want_full
  assert all(e.params["policy"] is jax.checkpoint_policies.dots_with_no_batch_dims_saveable for e in policy_eqns)
  assert all(e.params["policy"] is None for e in remats("full"))


@pytest.mark.parametrize("remat", ["attention", "full"])
def test_remat_inside_scanned_layers_lets_cse_through(remat):
  """Inside nn.scan the loop already keeps the recomputation apart, so remat's prevent_cse (an optimisation
  barrier that splits fusions; 5% more TPU bundles for text8's attention remat) is off there and on in unrolled
  layers, for the attention-only remat of the Transformer as for whole blocks."""
  x_in, known, t = inputs(TF_SHAPE, TF_K)
  for scan in (False, True):
    net = build_network(ml_collections.ConfigDict({**TF_CFG, "remat": remat, "scan_layers": scan}), TF_SHAPE, TF_K)
    params = random_params(abstract_init(net, TF_SHAPE, TF_K))["params"]
    eqns = _remat_eqns(jax.make_jaxpr(lambda p: net.apply({"params": p}, x_in, known, t))(params).jaxpr)
    flags = [e.params["prevent_cse"] for e in eqns]
    assert flags and all(flag is (not scan) for flag in flags), (scan, flags)


def test_bad_remat_and_attention_names_are_one_line_errors():
  cfg = ml_collections.ConfigDict
  with pytest.raises(ValueError, match=r"model.remat 'dots'.*'none', 'attention', 'full'.*nothing_saveable"):
    build_network(cfg({**TF_CFG, "remat": "dots"}), TF_SHAPE, TF_K)
  with pytest.raises(ValueError, match=r"model.attention_impl 'flash'.*'plain', 'xla', 'cudnn', 'auto'"):
    build_network(cfg({**UNET_CFG, "attention_impl": "flash"}), UNET_SHAPE, UNET_K)
  assert layers.remat_choice(True) == "full" and layers.remat_choice(False) == "none"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_dot_product_attention_matches_plain_form(dtype, causal):
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  shape = (2, 24, 3, 8)
  q = (2.0 * jax.random.normal(kq, shape)).astype(dtype)  # wide logits, so the softmax is not near uniform
  k, v = jax.random.normal(kk, shape).astype(dtype), jax.random.normal(kv, shape).astype(dtype)
  plain = attention.dot_product_attention(q, k, v, causal=causal, impl="plain")
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  for impl in ("xla", "auto"):  # 'auto' is 'xla' off GPU
    out = attention.dot_product_attention(q, k, v, causal=causal, impl=impl)
    assert out.dtype == plain.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(plain, np.float32), rtol=tol, atol=tol)
  if causal:  # query 0 sees key 0 only
    np.testing.assert_allclose(np.asarray(plain[:, 0], np.float32), np.asarray(v[:, 0], np.float32), atol=tol)
  if jax.default_backend() == "gpu" and dtype == jnp.bfloat16:
    out = attention.dot_product_attention(q, k, v, causal=causal, impl="cudnn")
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(plain, np.float32), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_networks_with_xla_attention_match_plain(built, dtype):
  x_in, known, t = inputs(built.shape, built.k)
  extra = {"causal": True} if built.kind == "transformer" else {}
  outs = {}
  for impl in ("plain", "xla"):
    net, _, _ = _build(built.kind, attention_impl=impl, dtype=dtype, **extra)
    outs[impl] = jax.jit(net.apply)(built.variables, x_in, known, t)
  tol = 1e-5 if dtype == "float32" else 2e-2 * float(jnp.max(jnp.abs(outs["plain"])))
  np.testing.assert_allclose(outs["xla"], outs["plain"], rtol=1e-5, atol=tol)


SCAN_NETS = {
  "unet": (dict(UNET_CFG, num_res_blocks=2), UNET_SHAPE, UNET_K),
  "transformer": (dict(TF_CFG, num_layers=3), TF_SHAPE, TF_K),
  "diffwave": (dict(name="diffwave", num_blocks=4, features=16, dilation_cycle=2), (32,), 16),
}


@pytest.mark.parametrize("kind", list(SCAN_NETS))
def test_scanned_layers_match_unrolled_with_stacked_params(kind):
  """scan_layers=True with the unrolled params stacked (nets.scan_params) gives the same logits and the same
  gradients, remat inside the scan included; every layer's slice of the stacked params gets a gradient; the
  stacked axis carries the logical name 'layers'."""
  from ardm_jax.nets import scan_params

  cfg, shape, k = SCAN_NETS[kind]
  x_in, known, t = inputs(shape, k)
  build = lambda **o: build_network(ml_collections.ConfigDict({**cfg, **o}), shape, k)
  unrolled, scanned = build(), build(scan_layers=True, remat="full")
  params = random_params(abstract_init(unrolled, shape, k))["params"]
  boxed = abstract_init(scanned, shape, k)
  stacked = scan_params(params, scanned)
  assert jax.tree.structure(stacked) == jax.tree.structure(nn.unbox(boxed)["params"])
  specs = nn.get_partition_spec(boxed)["params"]
  scan_key = {"unet": "down", "transformer": "blocks", "diffwave": "cycles"}[kind]
  is_spec = lambda s: isinstance(s, jax.sharding.PartitionSpec)
  for spec, leaf in zip(
    jax.tree.leaves(specs[scan_key], is_leaf=is_spec), jax.tree.leaves(nn.unbox(boxed)["params"][scan_key])
  ):
    assert spec[0] == "layers" and len(spec) == leaf.ndim, spec

  def loss(net):
    return lambda p: jnp.sum(jnp.sin(net.apply({"params": p}, x_in, known, t)))

  out_u = jax.jit(unrolled.apply)({"params": params}, x_in, known, t)
  out_s = jax.jit(scanned.apply)({"params": stacked}, x_in, known, t)
  np.testing.assert_allclose(out_s, out_u, rtol=1e-5, atol=1e-5)
  grad_u = jax.jit(jax.grad(loss(unrolled)))(params)
  grad_s = jax.jit(jax.grad(loss(scanned)))(stacked)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grad_s, scan_params(grad_u, scanned)
  )
  per_layer = jax.tree_util.tree_flatten_with_path(
    jax.tree.map(lambda g: np.asarray(jnp.abs(g).reshape(g.shape[0], -1).max(-1)), grad_s[scan_key])
  )[0]
  # DiffWave's last block feeds only the skip sum, so its residual conv gets no gradient (unrolled alike).
  unused = lambda path: (
    kind == "diffwave" and "residual" in str(path) and f"'block_{cfg['dilation_cycle'] - 1}'" in str(path)
  )
  dead = [(jax.tree_util.keystr(path), m) for path, m in per_layer if not (m > 0).all() and not unused(path)]
  assert not dead, f"layers without gradient: {dead}"


def test_scanned_dropout_differs_per_layer_and_only_in_training():
  """Under scan each layer draws its own dropout mask (split_rngs), as separate unrolled layers do; eval stays
  deterministic."""
  cfg = ml_collections.ConfigDict({**TF_CFG, "num_layers": 2, "dropout": 0.5, "scan_layers": True})
  net = build_network(cfg, TF_SHAPE, TF_K)
  x_in, known, t = inputs(TF_SHAPE, TF_K)
  variables = jax.jit(lambda key: net.init({"params": key}, x_in, known, t))(jax.random.key(0))
  run = jax.jit(
    lambda key, train: net.apply(variables, x_in, known, t, train=train, rngs={"dropout": key}), static_argnums=1
  )
  np.testing.assert_array_equal(run(jax.random.key(3), False), run(jax.random.key(4), False))
  assert float(jnp.max(jnp.abs(run(jax.random.key(3), True) - run(jax.random.key(3), False)))) > 1e-3

  def mlp_dropout_outputs(key):
    _, state = net.apply(
      variables,
      x_in,
      known,
      t,
      train=True,
      rngs={"dropout": key},
      capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Dropout) and "mlp" in mdl.path,
      mutable=["intermediates"],
    )
    return jax.tree.leaves(state["intermediates"])

  (out_2xBxLxM,) = jax.jit(mlp_dropout_outputs)(jax.random.key(5))
  dropped = np.asarray(out_2xBxLxM == 0)
  assert dropped.shape[0] == 2 and 0.3 < dropped.mean() < 0.7
  assert (dropped[0] != dropped[1]).mean() > 0.3, "both layers drew the same dropout mask"
