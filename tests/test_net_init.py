"""The network options that follow the official code where the paper is silent (model.kernel_init, attention_bias,
input_embed_std, time_endpoint): each changes what it names and nothing else, and a config without them builds the
networks it built before the options existed."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ardm_jax.nets import build_network, layers

B, K = 2, 5
NETS = {
  "unet": (dict(name="unet", ch=16, num_res_blocks=1, input_embed_dim=4, attention=False), (4, 4, 1)),
  "transformer": (dict(name="transformer", num_layers=1, emb_dim=32, mlp_dim=64, num_heads=4), (8,)),
  "diffwave": (dict(name="diffwave", num_blocks=2, features=16, dilation_cycle=2), (16,)),
}
# The official choices (the paper configs') and the values a config without the keys gets.
OFFICIAL = {
  "unet": dict(input_embed_std=0.125, time_endpoint=True),
  "transformer": dict(kernel_init="xavier_uniform", attention_bias=False, time_endpoint=True),
  "diffwave": dict(kernel_init="kaiming_normal", input_embed_std=0.125, time_endpoint=True),
}
OLD = {
  "unet": dict(input_embed_std=1.0, time_endpoint=False),
  "transformer": dict(kernel_init="lecun_normal", attention_bias=True, time_endpoint=False),
  "diffwave": dict(kernel_init="lecun_normal", input_embed_std=1.0, time_endpoint=False),
}


def _net(kind, **options):
  cfg, shape = NETS[kind]
  return build_network(ml_collections.ConfigDict({**cfg, **options}), shape, K)


def _init(net):
  """Real initial parameters (flat {path: array}) and the time embedding's output for t = 1, 4."""
  shape = net.data_shape
  x_in = jnp.full((B, *shape), K, jnp.int32)
  known = jnp.zeros((B, *shape), bool)
  t = jnp.array([1, 4], jnp.int32)
  capture = lambda mdl, _: isinstance(mdl, layers.TimeEmbedding)  # noqa: E731
  variables = jax.jit(lambda key: net.init({"params": key}, x_in, known, t, capture_intermediates=capture))(
    jax.random.key(0)
  )
  leaves = jax.tree.leaves_with_path(nn.unbox(variables))
  params = {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v) for path, v in leaves}
  temb = params.pop("intermediates/time_embed/__call__/0")
  return {k.removeprefix("params/"): v for k, v in params.items()}, temb, np.asarray(t)


# One xdist group: the module fixture below (six compiled inits) is then built by one worker, not by each worker
# that runs one of its tests.
pytestmark = pytest.mark.xdist_group("test_net_init")


@pytest.fixture(scope="module")
def inits():
  return {
    (kind, which): _init(_net(kind, **options.get(kind, {})))
    for kind in NETS
    for which, options in (("old", {}), ("official", OFFICIAL))
  }


@pytest.mark.parametrize("kind", list(NETS))
def test_a_config_without_the_options_builds_the_network_it_built_before(kind):
  """Missing keys read as the old behaviour: the same module (hence the same parameters and outputs, bit for bit) as
  the keys at their old values; the official values make a different module."""
  assert _net(kind) == _net(kind, **OLD[kind])
  assert _net(kind) != _net(kind, **OFFICIAL[kind])


def test_time_endpoint_spaces_the_frequencies_by_half_minus_one():
  t = np.arange(0.0, 1000.0, 37.0)
  for endpoint, n in ((True, 7), (False, 8)):  # dim 16: half = 8
    freqs = np.exp(-np.log(1e4) * np.arange(8) / n)
    expected = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=-1)
    np.testing.assert_allclose(layers.sinusoidal_embedding(jnp.asarray(t), 16, endpoint=endpoint), expected, atol=2e-4)
  assert np.exp(-np.log(1e4) * 7 / 7) == pytest.approx(1e-4)  # the official last frequency is 1 / 10^4 itself


@pytest.mark.parametrize("kind", list(NETS))
def test_each_network_embeds_t_with_the_chosen_frequencies(inits, kind):
  """The time embedding's output, recomputed by hand from its parameters: half - 1 with time_endpoint, half without
  (the old networks)."""
  cfg, shape = NETS[kind]
  dim = cfg.get("ch") or cfg.get("emb_dim") or cfg["features"]
  for which, n in (("official", dim // 2 - 1), ("old", dim // 2)):
    params, temb, t = inits[kind, which]
    freqs = np.exp(-np.log(1e4) * np.arange(dim // 2) / n)
    args = (t * 1000.0 / np.prod(shape))[:, None] * freqs
    h = np.concatenate([np.sin(args), np.cos(args)], axis=-1)
    h = h @ params["time_embed/dense_0/kernel"] + params["time_embed/dense_0/bias"]
    h = (h / (1 + np.exp(-h))) @ params["time_embed/dense_1/kernel"] + params["time_embed/dense_1/bias"]
    np.testing.assert_allclose(temb, h, rtol=1e-4, atol=1e-5, err_msg=which)


def _changed_by_options(kind, path):
  if path.startswith("time_embed/"):
    return False
  if kind == "transformer":
    return path.endswith("kernel")
  if "input_embed/" in path:
    return True
  return (
    kind == "diffwave"
    and path.endswith("kernel")
    and path.split("/")[-2] in ("dilated_conv", "residual", "skip", "skip_out")
  )


@pytest.mark.parametrize("kind", list(NETS))
def test_options_change_only_the_parameters_they_name(inits, kind):
  old, official = inits[kind, "old"][0], inits[kind, "official"][0]
  dropped = set(old) - set(official)
  if kind == "transformer":  # attention_bias=False: the q, k, v and output biases are gone, nothing else
    assert dropped == {f"block_0/attn/{p}/bias" for p in ("query", "key", "value", "out")}
  else:
    assert not dropped
  assert set(official) <= set(old)
  for path in official:
    if not _changed_by_options(kind, path):
      np.testing.assert_array_equal(official[path], old[path], err_msg=path)


def test_id_embedding_std_scales_the_same_draw(inits):
  for kind in ("unet", "diffwave"):
    old, official = inits[kind, "old"][0]["input_embed/embedding"], inits[kind, "official"][0]["input_embed/embedding"]
    np.testing.assert_array_equal(official, np.float32(0.125) * old)


def test_transformer_xavier_uniform_kernels_lie_within_their_bound_and_fill_it(inits):
  """xavier_uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), so every |w| / a <= 1 with std 1/sqrt(3); the
  default lecun_normal kernels (std 1 / sqrt(fan_in), truncated at about 2.3 of that) break the bound."""
  fans = {"query": (32, 32), "key": (32, 32), "value": (32, 32), "out": (32, 32), "wi": (32, 64), "wo": (64, 32)}
  fans["logits"] = (32, K)

  def scaled(which):
    params = inits["transformer", which][0]
    kernels = {p: v for p, v in params.items() if p.endswith("kernel") and not p.startswith("time_embed/")}
    assert {p.split("/")[-2] for p in kernels} == set(fans)
    return {p: v / np.sqrt(6.0 / sum(fans[p.split("/")[-2]])) for p, v in kernels.items()}

  official = scaled("official")
  assert max(np.abs(v).max() for v in official.values()) <= 1.0
  pooled = np.concatenate([v.ravel() for v in official.values()])
  assert np.std(pooled) == pytest.approx(1 / np.sqrt(3), rel=0.05)
  assert np.abs(pooled).max() > 0.99
  assert max(np.abs(v).max() for v in scaled("old").values()) > 1.2


def test_diffwave_kaiming_normal_is_lecun_normal_at_twice_the_variance(inits):
  """Both are truncated normals over fan_in = kernel width x input channels, kaiming with variance 2 / fan_in: the
  same draws, scaled by sqrt(2), in every dilated, residual and skip convolution and in the head's skip_out."""
  old, official = inits["diffwave", "old"][0], inits["diffwave", "official"][0]
  changed = [p for p in official if _changed_by_options("diffwave", p) and p.endswith("kernel")]
  assert len(changed) == 2 * 3 + 1
  for path in changed:
    np.testing.assert_allclose(official[path], np.sqrt(2.0) * old[path], rtol=1e-5, err_msg=path)
  pooled = np.concatenate([official[p].ravel() * np.sqrt(np.prod(official[p].shape[:-1]) / 2.0) for p in changed])
  assert np.std(pooled) == pytest.approx(1.0, rel=0.07)


def test_unknown_kernel_init_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown model.kernel_init 'he'"):
    _net("diffwave", kernel_init="he")
