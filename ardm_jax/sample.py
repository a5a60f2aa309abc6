"""Sampling and completion (inpainting / infilling) jobs, and writing their results as PNG or text."""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ardm_jax import ardm, policy as policy_lib

POLICY_FILE = "policy.json"
UNKNOWN_CHAR = "_"  # marks the characters to fill in a text input


def choose_policy(model, budget: int | None, naive: bool = False, policy_file: str | None = None,
                  start: int = 0) -> np.ndarray:
  """Steps for generating the variables with sigma in [start, D).

  No budget: one call per variable. With a budget: the DP-optimal policy from the workdir's policy.json (or
  --policy FILE), or evenly spaced steps with `naive`. For completion (start > 0) the DP is re-run on the
  stored L_t restricted to the steps that remain.
  """
  num_steps = model.spec.num_steps
  remaining = num_steps - start
  if budget is None:
    return np.arange(start, num_steps, dtype=np.int32)
  if not 1 <= budget <= remaining:
    raise ValueError(f"--budget {budget} must be between 1 and the {remaining} steps left to generate")
  if naive:
    return (start + policy_lib.naive_policy(remaining, budget)).astype(np.int32)
  path = policy_file or os.path.join(model.workdir, POLICY_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"no policy file at {path}: run `ardm policy --workdir {model.workdir} --budgets {budget}` "
                     "first, or pass --naive for evenly spaced steps")
  pf = policy_lib.load_policy_file(path)
  if start == 0:
    steps = policy_lib.policy_for_budget(pf, budget)
    return policy_lib.check_policy_steps(steps, num_steps).astype(np.int32)
  losses = np.asarray(pf["stages"][0]["loss_per_step"], np.float64)[start:]
  steps, _ = policy_lib.optimal_policies(losses, [budget])[budget]
  return (start + np.asarray(steps)).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_classes"))
def _generate(params, key, x_init, sigma, policy, observed, *, apply_fn, num_classes):
  return ardm.generate(apply_fn, params, key, x_init, sigma, policy, num_classes=num_classes, observed=observed)


def sample(model, num: int, steps: np.ndarray, seed: int = 0) -> np.ndarray:
  """Unconditional samples [num, *shape] with one network call per policy step."""
  if num < 1:
    raise ValueError(f"--num must be at least 1, got {num}")
  spec = model.spec
  key_order, key_sample = jax.random.split(jax.random.PRNGKey(seed))
  sigma = ardm.sample_orders(key_order, num, spec.num_steps)
  x_init = jnp.full((num,) + spec.shape, spec.num_classes, jnp.int32)
  observed = jnp.zeros((num,) + spec.shape, bool)
  out = _generate(model.params, key_sample, x_init, sigma, jnp.asarray(steps), observed,
                  apply_fn=model.setup.apply_fn, num_classes=spec.num_classes)
  return np.asarray(out)


def complete(model, item: np.ndarray, observed: np.ndarray, num: int, budget: int | None = None,
             naive: bool = False, policy_file: str | None = None, seed: int = 0) -> np.ndarray:
  """`num` completions of one partly observed item: observed variables come first in every order."""
  spec = model.spec
  if item.shape != spec.shape or observed.shape != spec.shape:
    raise ValueError(f"input has shape {item.shape} (mask {observed.shape}) but the model takes {spec.shape}")
  num_observed = int(observed.sum())
  if num_observed == spec.num_steps:
    raise ValueError("every position of the input is given: nothing to complete (mark unknown positions)")
  steps = choose_policy(model, budget, naive, policy_file, start=num_observed)
  key_order, key_sample = jax.random.split(jax.random.PRNGKey(seed))
  observed_b = jnp.broadcast_to(jnp.asarray(observed), (num,) + spec.shape)
  sigma = ardm.orders_observed_first(key_order, observed_b.reshape(num, -1))
  x_init = jnp.where(observed_b, jnp.asarray(item, jnp.int32), spec.num_classes)
  out = _generate(model.params, key_sample, x_init, sigma, jnp.asarray(steps), observed_b,
                  apply_fn=model.setup.apply_fn, num_classes=spec.num_classes)
  return np.asarray(out)


# ------------------------------------------------------------------------------------------- file formats
def to_uint8(images: np.ndarray, num_classes: int) -> np.ndarray:
  """Class values 0..K-1 spread over 0..255 for viewing (exact identity for K = 256)."""
  if num_classes == 256:
    return images.astype(np.uint8)
  return np.round(images.astype(np.float64) * 255.0 / (num_classes - 1)).astype(np.uint8)


def from_uint8(pixels: np.ndarray, num_classes: int) -> np.ndarray:
  """Inverse of to_uint8 (exact on its outputs)."""
  if num_classes == 256:
    return pixels.astype(np.int32)
  return np.round(pixels.astype(np.float64) * (num_classes - 1) / 255.0).astype(np.int32)


def image_grid(images: np.ndarray, num_classes: int, pad: int = 1) -> np.ndarray:
  """[N, H, W, C] -> one padded uint8 grid image, as square as possible."""
  n, h, w, c = images.shape
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  pixels = to_uint8(images, num_classes)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = pixels[i]
  return grid


def check_writable(path: str, overwrite: bool) -> None:
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; choose another --out or pass --overwrite to replace it")


def write_items(spec, items: np.ndarray, path: str, overwrite: bool = False, scale: int = 1) -> str:
  """PNG grid for images (upscaled `scale` times for visibility), one line per item for text."""
  check_writable(path, overwrite)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if spec.kind == "image":
    grid = image_grid(items, spec.num_classes)
    if scale > 1:
      grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  elif spec.kind == "text":
    with open(path, "w", encoding="ascii") as f:
      for row in items:
        f.write("".join(spec.alphabet[int(v)] for v in row) + "\n")
  else:
    raise ValueError(f"cannot write items of kind {spec.kind!r}")
  return path


def read_image_input(spec, path: str) -> np.ndarray:
  """An image input (.png or .npy of class values) of the model's shape."""
  if path.endswith(".npy"):
    item = np.load(path, allow_pickle=False)
    if item.ndim == len(spec.shape) - 1:
      item = item[..., None]
    values = item.astype(np.int64)
  elif path.lower().endswith(".png"):
    with Image.open(path) as img:
      pixels = np.asarray(img.convert("L" if spec.shape[-1] == 1 else "RGB"))
    if pixels.ndim == 2:
      pixels = pixels[..., None]
    values = from_uint8(pixels, spec.num_classes)
  else:
    raise ValueError(f"{path}: image inputs must be .png or .npy")
  if values.shape != spec.shape:
    raise ValueError(f"{path} has shape {values.shape} but the model takes {spec.shape}")
  if values.min() < 0 or values.max() >= spec.num_classes:
    raise ValueError(f"{path} has values outside 0..{spec.num_classes - 1}")
  return values.astype(np.int32)


def read_mask(spec, path: str | None) -> np.ndarray:
  """Known-mask for an image: a .png/.npy (non-zero = given) of H x W or H x W x C; default: the top half."""
  if path is None:
    mask = np.zeros(spec.shape, bool)
    mask[: spec.shape[0] // 2] = True
    return mask
  if path.endswith(".npy"):
    raw = np.load(path, allow_pickle=False)
  else:
    with Image.open(path) as img:
      raw = np.asarray(img.convert("L"))
  raw = np.asarray(raw) != 0
  if raw.shape == spec.shape[:-1]:
    raw = np.repeat(raw[..., None], spec.shape[-1], axis=-1)
  if raw.shape != spec.shape:
    raise ValueError(f"mask {path} has shape {raw.shape}; it must be {spec.shape[:-1]} or {spec.shape}")
  return raw


def read_text_input(spec, path: str) -> tuple[np.ndarray, np.ndarray]:
  """Text with '_' at unknown characters; a shorter text is continued to the model's length."""
  with open(path, encoding="utf-8") as f:
    text = f.read().rstrip("\n")
  length = spec.shape[0]
  if len(text) > length:
    raise ValueError(f"{path} has {len(text)} characters but the model takes at most {length}")
  ids = np.zeros(spec.shape, np.int32)
  observed = np.zeros(spec.shape, bool)
  for i, ch in enumerate(text):
    if ch == UNKNOWN_CHAR:
      continue
    if ch not in spec.alphabet:
      raise ValueError(f"{path}: character {ch!r} at position {i} is not in the model's alphabet "
                       f"{spec.alphabet!r}; use '{UNKNOWN_CHAR}' for unknown characters")
    ids[i] = spec.alphabet.index(ch)
    observed[i] = True
  return ids, observed


def completion_path(input_path: str, spec) -> str:
  stem, _ = os.path.splitext(input_path)
  return stem + (".completed.png" if spec.kind == "image" else ".completed.txt")
