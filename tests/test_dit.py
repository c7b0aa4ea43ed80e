"""DiT (jaxdiff.models.dit): the reference's parameter counts (closed form, DiT-XL/2's 675,129,632),
diffusers' DiTTransformer2DModel as an independent implementation (same parameters up to its
per-block copies of the embedders, the same position table, the same outputs once its weights are
loaded), adaLN-Zero's exact zero output, shapes, config errors naming the field, a tiny DiT
through the ordinary train step and two samplers, and bf16 compute."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_config_file, tiny_image_config

from jaxdiff.bulk import generate, read_shard
from jaxdiff.config_utils import validate_config
from jaxdiff.errors import ConfigError
from jaxdiff.models import DIT_VARIANTS, DiT, count_params, create_model, dummy_inputs
from jaxdiff.models.dit import DIT_SIZES, dit_variant, patchify, pos_embed_2d, unpatchify
from jaxdiff.training import train

pytestmark = pytest.mark.usefixtures("fast_compiles")


def reference_count(hidden, depth, patch, in_ch, image, classes, learn_sigma, mlp_ratio=4.0):
  """The reference DiT's parameter count in closed form, its fixed pos_embed table included:
  x_embedder conv, pos_embed, t_embedder MLP (256 -> D -> D), y_embedder table (classes + 1 with
  the CFG null class), per block qkv + proj + MLP + adaLN (6D), final adaLN (2D) + linear."""
  d, hid = hidden, int(hidden * mlp_ratio)
  out = in_ch * (2 if learn_sigma else 1)
  tokens = (image // patch) ** 2
  block = (d * 3 * d + 3 * d) + (d * d + d) + (d * hid + hid) + (hid * d + d) + (d * 6 * d + 6 * d)
  return (
    (in_ch * patch * patch * d + d)
    + tokens * d
    + (256 * d + d + d * d + d)
    + (classes + 1) * d
    + depth * block
    + (d * 2 * d + 2 * d)
    + (d * patch * patch * out + patch * patch * out)
  )


def tiny_dit_config(num_steps: int = 4):
  c = tiny_image_config(num_steps)
  c.model.name = "dit"
  c.model.hidden_size = 32
  c.model.depth = 2
  c.model.num_heads = 2
  return c


def _perturbed(params, key, scale=0.05):
  """Parameters moved off their (partly zero) initialisation, so outputs are not trivially zero."""
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(
    tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
  )


# ---------------------------------------------------------------- parameter counts


def test_xl2_has_the_reference_parameter_count():
  model = DiT.from_variant("XL/2", num_classes=1000, learn_sigma=True, in_channels=4)
  assert model.param_count(32) == 675_129_632
  assert reference_count(1152, 28, 2, 4, 32, 1000, True) == 675_129_632
  # the fixed table is no variable: the trainable parameters are the count less 256 x 1152
  assert model.param_count(32, include_pos_embed=False) == 675_129_632 - 256 * 1152


@pytest.mark.parametrize("variant", ["S/2", "B/4", "L/8", "XL/4"])
def test_variants_match_the_closed_form(variant):
  sizes = dit_variant(variant)
  assert (sizes["hidden_size"], sizes["depth"], sizes["num_heads"]) == DIT_SIZES[variant.split("/")[0]]
  model = DiT.from_variant(variant, num_classes=1000, learn_sigma=True)
  want = reference_count(sizes["hidden_size"], sizes["depth"], sizes["patch_size"], 4, 32, 1000, True)
  assert model.param_count(32, 4) == want


def test_variant_names():
  assert len(DIT_VARIANTS) == 12 and "XL/2" in DIT_VARIANTS and "S/8" in DIT_VARIANTS
  for bad in ("XL/3", "M/2", "XL", "", "xl/2"):
    with pytest.raises(ConfigError, match="dit_variant"):
      dit_variant(bad)


def _diffusers_dit(hidden, heads, depth, patch, in_ch, image, classes, learn_sigma):
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  return diffusers.DiTTransformer2DModel(
    num_attention_heads=heads,
    attention_head_dim=hidden // heads,
    in_channels=in_ch,
    out_channels=in_ch * (2 if learn_sigma else 1),
    num_layers=depth,
    sample_size=image,
    patch_size=patch,
    num_embeds_ada_norm=classes,
    norm_eps=1e-6,  # the reference's LayerNorm eps (diffusers' default 1e-5 is its second norm's)
  ).eval()


SMALL = dict(hidden=64, heads=4, depth=3, patch=2, in_ch=4, image=8, classes=10, learn_sigma=True)


def test_parameter_count_agrees_with_diffusers():
  """diffusers' DiT has the same layers, except that every block holds its own copy of the time
  MLP and the class table (AdaLayerNormZero.emb; converted checkpoints repeat the reference's one
  embedder), and its position table is a non-persistent buffer: neither a parameter nor in the
  state dict. So diffusers' parameters = our trainable ones + (depth - 1) embedder copies, and
  the reference's count = our trainable ones + the table."""
  s = SMALL
  ref = _diffusers_dit(**s)
  theirs = sum(p.numel() for p in ref.parameters())
  names = dict(ref.named_parameters())
  assert not any("pos_embed.pos_embed" in n for n in names)
  assert "pos_embed.pos_embed" not in ref.state_dict()
  assert tuple(ref.pos_embed.pos_embed.shape) == (1, (s["image"] // s["patch"]) ** 2, s["hidden"])
  embedder = sum(p.numel() for n, p in names.items() if n.startswith("transformer_blocks.0.norm1.emb."))
  d = s["hidden"]
  assert embedder == (256 * d + d + d * d + d) + (s["classes"] + 1) * d

  model = DiT(s["patch"], d, s["depth"], s["heads"], num_classes=s["classes"], learn_sigma=True)
  ours = model.param_count(s["image"], s["in_ch"], include_pos_embed=False)
  assert ours + (s["depth"] - 1) * embedder == theirs
  table = model.pos_embed_size(s["image"])
  assert ours + table == reference_count(
    d, s["depth"], s["patch"], s["in_ch"], s["image"], s["classes"], True
  )


def test_position_table_equals_diffusers():
  """diffusers' table as its PatchEmbed builds it for DiT (base_size = the token grid: positions 0, 1, ...)."""
  embeddings = pytest.importorskip("diffusers.models.embeddings")
  for dim, grid in ((64, 4), (384, 16), (1152, 16)):
    want = np.asarray(
      embeddings.get_2d_sincos_pos_embed(dim, grid, base_size=grid, output_type="np"), np.float32
    )
    np.testing.assert_allclose(pos_embed_2d(dim, grid), want, atol=1e-6, rtol=0)
  with pytest.raises(ConfigError, match="hidden_size"):
    pos_embed_2d(30, 4)


def _load_diffusers_weights(ref, params, depth):
  """Our parameter tree with diffusers' weights (block 0's embedders; torch Linear is [out, in])."""
  sd = {k: np.asarray(v.detach().numpy()) for k, v in ref.state_dict().items()}
  lin = lambda n: {"kernel": sd[n + ".weight"].T, "bias": sd[n + ".bias"]}
  emb = "transformer_blocks.0.norm1.emb."
  new = {
    "patch_embed": {
      "kernel": sd["pos_embed.proj.weight"].transpose(2, 3, 1, 0),
      "bias": sd["pos_embed.proj.bias"],
    },
    "time_embed_0": lin(emb + "timestep_embedder.linear_1"),
    "time_embed_1": lin(emb + "timestep_embedder.linear_2"),
    "label_embed": {"embedding": sd[emb + "class_embedder.embedding_table.weight"]},
    "final_layer": {"adaLN_modulation": lin("proj_out_1"), "linear": lin("proj_out_2")},
  }
  for i in range(depth):
    b = f"transformer_blocks.{i}."
    new[f"blocks_{i}"] = {
      "adaLN_modulation": lin(b + "norm1.linear"),
      "attn": {
        "query": lin(b + "attn1.to_q"),
        "key": lin(b + "attn1.to_k"),
        "value": lin(b + "attn1.to_v"),
        "out": lin(b + "attn1.to_out.0"),
      },
      "mlp": {"fc1": lin(b + "ff.net.0.proj"), "fc2": lin(b + "ff.net.2")},
    }
  assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params)):
    assert a.shape == b.shape
  return jax.tree_util.tree_map(jnp.asarray, new)


def test_outputs_equal_diffusers_with_its_weights():
  """Same weights -> the same prediction as diffusers' DiTTransformer2DModel (random, non-zero
  weights; every block's embedders set to block 0's, as in a converted reference checkpoint)."""
  torch = pytest.importorskip("torch")
  s = SMALL
  ref = _diffusers_dit(**s)
  with torch.no_grad():
    for p in ref.parameters():
      p.copy_(0.1 * torch.randn_like(p))
    first = ref.transformer_blocks[0].norm1.emb.state_dict()
    for block in ref.transformer_blocks[1:]:
      block.norm1.emb.load_state_dict(first)
  model = DiT(s["patch"], s["hidden"], s["depth"], s["heads"], num_classes=s["classes"], learn_sigma=True)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, s["image"], s["image"], s["in_ch"])).astype(np.float32)
  t = np.array([0, 437, 999])
  y = np.array([2, 9, 10])  # 10: the null class
  params = model.init(jax.random.key(0), x, t, y)["params"]
  params = _load_diffusers_weights(ref, params, s["depth"])
  ours = model.apply({"params": params}, x, t, y)
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(t), torch.from_numpy(y)).sample
  want = want.numpy().transpose(0, 2, 3, 1)
  assert ours.shape == want.shape == (3, s["image"], s["image"], 2 * s["in_ch"])
  np.testing.assert_allclose(ours, want, atol=2e-4 * float(np.abs(want).max()), rtol=0)


# ---------------------------------------------------------------- outputs and shapes


@pytest.mark.parametrize("patch, learn_sigma", [(1, False), (2, True), (4, False), (8, True)])
def test_output_is_exactly_zero_at_init_with_the_right_shape(patch, learn_sigma):
  c = tiny_dit_config()
  c.model.patch_size = patch
  c.model.learn_sigma = learn_sigma
  model = create_model(c)
  x, t, kw = dummy_inputs(c, batch_size=3)
  x = jax.random.normal(jax.random.key(1), x.shape)
  t = jnp.array([3, 500, 999])
  kw["y"] = jnp.array([0, 7, 10])
  variables = jax.jit(model.init)(jax.random.key(0), x, t, **kw)
  apply = jax.jit(model.apply)
  out = apply(variables, x, t, **kw)
  assert out.shape == (3, 8, 8, 2 if learn_sigma else 1) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, 0.0)
  p = variables["params"]
  for name in ("blocks_0", "blocks_1"):
    np.testing.assert_array_equal(p[name]["adaLN_modulation"]["kernel"], 0.0)
  np.testing.assert_array_equal(p["final_layer"]["linear"]["kernel"], 0.0)
  assert p["patch_embed"]["kernel"].shape == (patch, patch, 1, 32)
  # off its initialisation the network depends on the time, the label and the input
  v = {"params": _perturbed(p, jax.random.key(2))}
  base = apply(v, x, t, **kw)
  assert np.abs(base).max() > 0
  assert not np.allclose(base, apply(v, x, t + 1, **kw))
  assert not np.allclose(base, apply(v, x, t, **{**kw, "y": jnp.array([1, 7, 10])}))


def test_patchify_roundtrip_and_layout():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  tokens = patchify(x, 2)
  assert tokens.shape == (2, 6, 12)
  np.testing.assert_array_equal(tokens[0, 1], x[0, 0:2, 2:4, :].reshape(-1))  # row-major patches
  np.testing.assert_array_equal(unpatchify(tokens, 2, 2, 3), x)


def test_unconditional_and_non_square():
  model = DiT(2, 32, 1, 2)
  x = jnp.ones((2, 4, 8, 3))
  v = model.init(jax.random.key(0), x, jnp.zeros(2))
  assert "label_embed" not in v["params"]
  assert model.apply(v, x, jnp.zeros(2)).shape == (2, 4, 8, 3)
  with pytest.raises(ValueError, match="unconditional"):
    model.apply(v, x, jnp.zeros(2), jnp.zeros(2, jnp.int32))


def test_remat_and_cross_attention():
  c = tiny_dit_config()
  c.model.context_dim = 8
  model = create_model(c)
  x, t, kw = dummy_inputs(c, batch_size=2)
  assert kw["context"].shape == (2, 1, 8)
  v = model.init(jax.random.key(0), x, t, **kw)
  assert "cross_attn" in v["params"]["blocks_0"]
  v = {"params": _perturbed(v["params"], jax.random.key(3))}
  x = jax.random.normal(jax.random.key(1), x.shape)
  ctx = jax.random.normal(jax.random.key(4), (2, 3, 8))
  apply = jax.jit(model.apply)
  out = apply(v, x, t, y=kw["y"], context=ctx)
  c.model.remat = True
  rematted = create_model(c)
  np.testing.assert_allclose(jax.jit(rematted.apply)(v, x, t, y=kw["y"], context=ctx), out, atol=1e-6)
  loss = lambda p: jnp.sum(rematted.apply({"params": p}, x, t, y=kw["y"], context=ctx) ** 2)
  grads = jax.jit(jax.grad(loss))(v["params"])
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
  # an all-False mask is the null context, exactly as no context at all
  none = apply(v, x, t, y=kw["y"])
  masked = apply(v, x, t, y=kw["y"], context=ctx, context_mask=jnp.zeros((2, 3), bool))
  np.testing.assert_allclose(masked, none, atol=1e-6)
  assert not np.allclose(out, none)


def test_bf16_compute_is_finite_and_close_to_f32():
  c = tiny_dit_config()
  c.model.hidden_size = 64
  model = create_model(c)
  x, t, kw = dummy_inputs(c, batch_size=4)
  x = jax.random.normal(jax.random.key(1), x.shape)
  t = jnp.array([1, 250, 600, 999])
  v = {"params": _perturbed(model.init(jax.random.key(0), x, t, **kw)["params"], jax.random.key(5))}
  want = jax.jit(model.apply)(v, x, t, **kw)
  c.model.dtype = "bfloat16"
  half = create_model(c)
  assert half.dtype == jnp.bfloat16 and half.param_dtype == jnp.float32
  got = jax.jit(half.apply)(v, x, t, **kw)
  assert got.dtype == jnp.float32 and np.isfinite(got).all()
  rel = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
  assert rel < 0.05, rel
  # parameters created under bf16 compute stay float32
  assert {
    p.dtype for p in jax.tree_util.tree_leaves(jax.eval_shape(half.init, jax.random.key(0), x, t, **kw))
  } == {jnp.dtype("float32")}


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
  "edit, field",
  [
    ({"patch_size": 3}, "patch_size"),  # the 8x8 digits
    ({"hidden_size": 30, "num_heads": 4}, "hidden_size"),  # not divisible by the heads
    ({"hidden_size": 30, "num_heads": 5}, "hidden_size"),  # divisible by the heads, not by 4
    ({"depth": 0}, "depth"),
    ({"mlp_ratio": 0.0}, "mlp_ratio"),
    ({"dit_variant": "XL/3"}, "dit_variant"),
    ({"dit_variant": "S/2", "hidden_size": 100}, "hidden_size"),  # conflicts with the variant
    ({"time_embedding": "learned"}, "time_embedding"),
  ],
)
def test_wrong_config_names_the_field(edit, field):
  c = tiny_dit_config()
  for k, v in edit.items():
    c.model[k] = v
  with pytest.raises(ConfigError, match=f"model.{field}"):
    validate_config(c)
  with pytest.raises(ConfigError, match=f"model.{field}"):
    create_model(c)


def test_variant_patch_must_divide_the_image():
  c = load_config_file("default")
  c.model.name = "dit"
  c.model.dit_variant = "S/8"
  c.data.image_size = 12
  with pytest.raises(ConfigError, match=r"config.model.patch_size=8 \(from config.model.dit_variant='S/8'\)"):
    validate_config(c)
  with pytest.raises(ConfigError, match="image_size"):
    create_model(c)


def test_variant_fills_the_fields():
  c = tiny_dit_config()
  c.model.num_heads = 4  # the default: the variant's value is taken
  c.model.depth = 12  # the default, and the variant's
  c.model.hidden_size = 384  # the variant's
  c.model.dit_variant = "S/4"
  validate_config(c)
  m = create_model(c)
  assert (m.patch_size, m.hidden_size, m.depth, m.num_heads) == (4, 384, 12, 6)


def test_recipes_build():
  for name, image, channels, count in (("digits_dit", 8, 1, None), ("cifar10_dit", 32, 3, None)):
    c = load_config_file(name)
    validate_config(c)
    model = create_model(c)
    assert isinstance(model, DiT)
    assert model.param_count(image, channels, include_pos_embed=False) == count_params(
      jax.eval_shape(
        lambda m=model, c=c: m.init(jax.random.key(0), *dummy_inputs(c)[:2], **dummy_inputs(c)[2])
      )["params"]
    )
  s2 = load_config_file("cifar10_dit")
  m = create_model(s2)
  assert (m.hidden_size, m.depth, m.num_heads, m.patch_size, m.learn_sigma) == (384, 12, 6, 2, True)
  d = m.hidden_size
  want = reference_count(d, 12, 2, 3, 32, 10, True)
  assert m.param_count(32, 3) == want
  assert math.isclose(want, 32.58e6, rel_tol=1e-3)


# ---------------------------------------------------------------- training and sampling


def test_tiny_dit_trains_and_samples_with_two_samplers(tmp_path):
  c = tiny_dit_config(num_steps=6)
  c.train.log_every = 2
  c.train.checkpoint_every = 6
  state = train(c, str(tmp_path / "w"))
  assert int(state.step) == 6
  p = state.params
  assert np.abs(np.asarray(p["final_layer"]["linear"]["kernel"])).max() > 0  # left its zero init
  assert np.abs(np.asarray(p["blocks_0"]["adaLN_modulation"]["kernel"])).max() > 0
  for sampler, guidance in (("ddim", 1.0), ("dpmpp_2m", 2.0)):
    out = tmp_path / sampler
    s = generate(
      str(tmp_path / "w"),
      str(out),
      num_samples=4,
      sampler=sampler,
      num_steps=3,
      guidance_scale=guidance,
      progress=False,
    )
    shard = read_shard(str(out / s["files"][0]))
    images = np.asarray(shard["images"])
    assert images.shape[0] == 4 and images.shape[1:3] == (8, 8)
    assert np.isfinite(images.astype(np.float32)).all()


def test_size_errors_name_the_modules_fields_or_the_configs_by_caller():
  """Built directly, a DiT names its own fields; built from a config, the config's fields."""
  with pytest.raises(ConfigError, match=r"^DiT.hidden_size=30 is not divisible by DiT.num_heads=4$"):
    DiT(patch_size=2, hidden_size=30, depth=1, num_heads=4)
  with pytest.raises(ConfigError, match=r"^DiT.mlp_ratio must be a positive number, got 0.0$"):
    DiT(patch_size=2, hidden_size=32, depth=1, num_heads=4, mlp_ratio=0.0)
  with pytest.raises(ConfigError, match=r"^DiT.dit_variant must be one of"):
    DiT.from_variant("Q/2")
  c = tiny_dit_config()
  c.model.hidden_size, c.model.num_heads = 30, 4
  with pytest.raises(
    ConfigError, match=r"config.model.hidden_size=30 is not divisible by config.model.num_heads=4"
  ):
    create_model(c)
  c = tiny_dit_config()
  c.model.dit_variant = "Q/2"
  with pytest.raises(ConfigError, match=r"^config.model.dit_variant must be one of"):
    create_model(c)
  model = DiT(patch_size=4, hidden_size=32, depth=1, num_heads=4)
  with pytest.raises(ConfigError, match=r"^DiT.patch_size=4 does not divide the input's image size 6x6"):
    model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros((1,)))


def test_networks_do_not_name_config_fields():
  """Only the factory (jaxdiff.models.create_model) speaks of config.model / config.data: no error
  a network module raises names a config field."""
  import ast
  import pathlib

  import jaxdiff.models

  folder = pathlib.Path(jaxdiff.models.__file__).parent
  raises = 0
  for path in folder.glob("*.py"):
    if path.name == "__init__.py":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Raise):
        raises += 1
        text = ast.unparse(node)
        assert "config.model" not in text and "config.data" not in text, f"{path.name}: {text}"
  assert raises > 20  # the walk saw the modules' errors
