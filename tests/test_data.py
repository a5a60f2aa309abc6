"""Data sources: shapes, value ranges, fixed splits, deterministic and resumable batching, errors."""

import hashlib
import os
from pathlib import Path
import zipfile

import ml_collections
import numpy as np
import pytest

from ardm_jax import data
from ardm_jax.data import base, images, tfds_util
from ardm_jax.data.embedded import pydoc_prose

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# sha256 of the digits test split (uint8 bytes of its 300 items, in order). Updating this constant changes
# which digits are test items and breaks comparability with every published digits number; only do it if
# the split itself was deliberately redefined.
DIGITS_TEST_SHA256 = "fa65134b2c1990d05c8f00f10604a9c3898760db33e6090dbb00d3eb8fc1bd70"


def cfg(**kw):
  return ml_collections.ConfigDict(kw)


@pytest.fixture(scope="module")
def digits():
  return data.load(cfg(name="digits"))


@pytest.fixture(scope="module")
def pydoc():
  return data.load(cfg(name="pydoc_text", seq_len=64))


def shared_data_dir() -> Path:
  if not SHARED_DATA.is_dir():
    if os.environ.get("CI") == "true":
      pytest.fail(f"shared data folder {SHARED_DATA} is missing in CI")
    pytest.skip(f"shared data folder {SHARED_DATA} not present")
  return SHARED_DATA


def unique_images_npz(path, n, single_key=False):
  """n distinct (3, 3) grayscale items: item i holds i in base 256 in its first two pixels."""
  x = np.zeros((n, 3, 3), np.uint8)
  x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
  x[:, 2, 2] = 7
  if single_key:
    np.savez(path, x=x)
  else:
    np.savez(path, train_x=x, test_x=x[:3])
  return x


def item_ids(batch):
  return batch[:, 0, 0, 0].astype(np.int64) + 256 * batch[:, 0, 1, 0]


# ---- digits -----------------------------------------------------------------------------------------------


def test_digits_shapes_classes_values(digits):
  assert (digits.name, digits.kind, digits.shape, digits.num_classes, digits.alphabet) == (
    "digits",
    "image",
    (8, 8, 1),
    17,
    None,
  )
  train, test = digits.eval_items("train"), digits.eval_items("test")
  assert train.shape == (1497, 8, 8, 1) and test.shape == (300, 8, 8, 1)
  assert digits.num_train_items == 1497
  assert train.dtype == np.int32 and test.dtype == np.int32
  assert train.min() == 0 and train.max() == 16 and test.min() == 0 and test.max() == 16
  batch = digits.train_batch(0, 32, seed=0)
  assert batch.shape == (32, 8, 8, 1) and batch.dtype == np.int32
  with pytest.raises(ValueError, match="no split 'validation'"):
    digits.eval_items("validation")


def test_digits_split_is_fixed(digits):
  from sklearn.datasets import load_digits

  test = digits.eval_items("test")
  assert hashlib.sha256(test.astype(np.uint8).tobytes()).hexdigest() == DIGITS_TEST_SHA256
  # Train and test together are exactly the 1,797 sklearn images.
  all_x = np.rint(load_digits().images).astype(np.int32)[..., None]
  both = np.concatenate([digits.eval_items("train"), test])
  key = lambda x: sorted(map(bytes, x.astype(np.uint8)))
  assert key(both) == key(all_x)


def test_train_batch_deterministic_and_seeded(digits):
  a = digits.train_batch(7, 16, seed=3)
  np.testing.assert_array_equal(a, digits.train_batch(7, 16, seed=3))
  assert not np.array_equal(a, digits.train_batch(7, 16, seed=4))
  assert not np.array_equal(a, digits.train_batch(8, 16, seed=3))


@pytest.mark.parametrize("which", ["digits", "pydoc"])
def test_resume_gives_same_batches(which, request):
  ds = request.getfixturevalue(which)
  sequential = [ds.train_batch(s, 24, seed=11) for s in range(10)]
  fresh = data.load(cfg(name="digits")) if which == "digits" else data.load(cfg(name="pydoc_text", seq_len=64))
  for s in (9, 7, 5, 8, 6):  # out of order: no hidden iterator state
    np.testing.assert_array_equal(fresh.train_batch(s, 24, seed=11), sequential[s])


@pytest.mark.parametrize("which", ["digits", "pydoc"])
def test_process_slices_concatenate_to_global_batch(which, request):
  ds = request.getfixturevalue(which)
  for step in (0, 3, 200):
    whole = ds.train_batch(step, 24, seed=5)
    parts = [ds.train_batch(step, 24, seed=5, process_index=p, process_count=4) for p in range(4)]
    assert all(p.shape[0] == 6 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match="not divisible by process_count"):
    ds.train_batch(0, 10, seed=0, process_index=0, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    ds.train_batch(0, 8, seed=0, process_index=4, process_count=4)


def test_process_slices_are_disjoint(tmp_path):
  unique_images_npz(tmp_path / "u.npz", 50)
  ds = data.load(cfg(name="npz", path=str(tmp_path / "u.npz")))
  ids = [set(item_ids(ds.train_batch(1, 20, seed=2, process_index=p, process_count=4)).tolist()) for p in range(4)]
  assert sum(map(len, ids)) == 20 and len(set().union(*ids)) == 20


def test_every_item_once_per_epoch(tmp_path):
  n, gbs = 37, 8  # batch boundaries do not align with epoch boundaries
  unique_images_npz(tmp_path / "u.npz", n)
  ds = data.load(cfg(name="npz", path=str(tmp_path / "u.npz")))
  steps = -(-3 * n // gbs)
  stream = np.concatenate([item_ids(ds.train_batch(s, gbs, seed=9)) for s in range(steps)])
  epochs = [stream[e * n : (e + 1) * n] for e in range(3)]
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
  # A batch larger than the data spans several epochs and still visits each item once per epoch.
  big = item_ids(ds.train_batch(0, 2 * n, seed=9))
  np.testing.assert_array_equal(np.sort(big[:n]), np.arange(n))
  np.testing.assert_array_equal(np.sort(big[n:]), np.arange(n))


def test_bad_batch_arguments(digits):
  with pytest.raises(ValueError, match="integer"):
    digits.train_batch(1.5, 8, seed=0)
  with pytest.raises(ValueError, match=">= 0"):
    digits.train_batch(-1, 8, seed=0)


# ---- text -------------------------------------------------------------------------------------------------


def test_pydoc_text(pydoc):
  assert (pydoc.kind, pydoc.shape, pydoc.num_classes) == ("text", (64,), 27)
  assert pydoc.alphabet == " abcdefghijklmnopqrstuvwxyz"
  text = data.normalise_text(pydoc_prose())
  assert 300_000 < len(text) < 500_000
  seqs = pydoc.sequences
  lengths = {k: len(v) for k, v in seqs.items()}
  n = len(text)
  assert lengths == {"train": n * 90 // 100, "validation": n * 5 // 100, "test": n - n * 90 // 100 - n * 5 // 100}
  joined = "".join(pydoc.decode_text(seqs[s]) for s in ("train", "validation", "test"))
  assert joined == text
  val = pydoc.eval_items("validation")
  assert val.shape == (lengths["validation"] // 64, 64) and val.dtype == np.int32
  assert pydoc.decode_text(val.reshape(-1)) == pydoc.decode_text(seqs["validation"])[: val.size]
  batch = pydoc.train_batch(4, 16, seed=0)
  assert batch.shape == (16, 64) and batch.dtype == np.int32
  assert batch.min() >= 0 and batch.max() <= 26
  train_text = pydoc.decode_text(seqs["train"])
  assert all(pydoc.decode_text(row) in train_text for row in batch)  # crops lie inside the train split


def test_encode_decode_round_trip_and_errors(pydoc, digits):
  ids = np.random.default_rng(0).integers(0, 27, size=500)
  assert np.array_equal(pydoc.encode_text(pydoc.decode_text(ids)), ids)
  assert pydoc.encode_text("hello world").dtype == np.int32
  assert pydoc.encode_text(" az").tolist() == [0, 1, 26]
  with pytest.raises(ValueError, match=r"'H'.*position 6"):
    pydoc.encode_text("hello Hello")
  with pytest.raises(ValueError, match="0..26"):
    pydoc.decode_text(np.array([3, 27]))
  assert pydoc.decode_text(np.array([1, 27, 2]), absorbing_char="_") == "a_b"
  with pytest.raises(ValueError, match="text dataset"):
    digits.encode_text("abc")


def test_text_file_normalised_and_strict(tmp_path):
  raw = "Hello, World!\n\nÉtude 42: the  END.\n" * 40
  path = tmp_path / "t.txt"
  path.write_text(raw, encoding="utf-8")
  ds = data.load(cfg(name="text_file", path=str(path), seq_len=16))
  expected = data.normalise_text(raw)
  assert expected.startswith("hello world tude the end hello")
  assert "".join(ds.decode_text(ds.sequences[s]) for s in ("train", "validation", "test")) == expected
  assert ds.shape == (16,) and ds.train_batch(0, 4, seed=1).shape == (4, 16)
  with pytest.raises(ValueError, match=r"'H'.*position 0"):
    data.load(cfg(name="text_file", path=str(path), normalise=False))
  clean = tmp_path / "clean.txt"
  clean.write_text("abc de" * 100, encoding="ascii")
  strict = data.load(cfg(name="text_file", path=str(clean), normalise=False, seq_len=8))
  assert strict.decode_text(strict.sequences["train"]) == ("abc de" * 100)[:540]
  with pytest.raises(ValueError, match="seq_len"):
    data.load(cfg(name="text_file", path=str(clean), seq_len=100))  # validation split has 30 characters


def fake_text8(n):
  rng = np.random.default_rng(1)
  return "".join(np.array(list(" abcdefghijklmnopqrstuvwxyz"))[rng.integers(0, 27, n)])


def test_text8_from_zip_and_file(tmp_path):
  text = fake_text8(20_000)
  zpath = tmp_path / "text8.zip"
  with zipfile.ZipFile(zpath, "w") as zf:
    zf.writestr("text8", text)
  ds = data.load(cfg(name="text8", path=str(zpath), seq_len=50))
  assert (ds.name, ds.shape, ds.num_classes) == ("text8", (50,), 27)
  assert {k: len(v) for k, v in ds.sequences.items()} == {"train": 18_000, "validation": 1_000, "test": 1_000}
  assert ds.decode_text(ds.sequences["validation"]) == text[18_000:19_000]
  assert ds.decode_text(ds.sequences["test"]) == text[19_000:]
  test = ds.eval_items("test")
  assert test.shape == (20, 50)
  assert ds.decode_text(test[3]) == text[19_150:19_200]  # non-overlapping consecutive chunks
  (tmp_path / "text8").write_text(text, encoding="ascii")
  ds_file = data.load(cfg(name="text8", path=str(tmp_path / "text8"), seq_len=50))
  for split in ("train", "validation", "test"):
    np.testing.assert_array_equal(ds_file.eval_items(split), ds.eval_items(split))
  np.testing.assert_array_equal(ds_file.train_batch(3, 8, seed=0), ds.train_batch(3, 8, seed=0))
  assert data.load(cfg(name="text8", path=str(tmp_path))).shape == (250,)  # a folder holding text8.zip


def test_text8_errors(tmp_path):
  for bad in (cfg(name="text8"), cfg(name="text8", path=str(tmp_path / "nope.zip"))):
    with pytest.raises(ValueError, match=r"mattmahoney\.net/dc/text8\.zip.*config\.data\.path"):
      data.load(bad)
  (tmp_path / "text8").write_text("abc Def" * 100, encoding="ascii")
  with pytest.raises(ValueError, match=r"'D'.*position 4"):
    data.load(cfg(name="text8", path=str(tmp_path / "text8")))


# ---- images -----------------------------------------------------------------------------------------------


def test_npz_key_layouts(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(30, 4, 5, 3), dtype=np.uint8)
  np.savez(tmp_path / "a.npz", train_x=x[:20], test_x=x[20:])
  np.savez(tmp_path / "b.npz", x_train=x[:20], x_test=x[20:])
  a, b = (data.load(cfg(name="npz", path=str(tmp_path / f))) for f in ("a.npz", "b.npz"))
  for ds in (a, b):
    assert (ds.kind, ds.shape, ds.num_classes, ds.num_train_items) == ("image", (4, 5, 3), 256, 20)
    np.testing.assert_array_equal(ds.eval_items("test"), x[20:])
    assert ds.eval_items("train").dtype == np.int32
  np.testing.assert_array_equal(a.train_batch(2, 6, seed=0), b.train_batch(2, 6, seed=0))

  gray = unique_images_npz(tmp_path / "single.npz", 45, single_key=True)
  s1 = data.load(cfg(name="npz", path=str(tmp_path / "single.npz"), num_classes=256))
  s2 = data.load(cfg(name="npz", path=str(tmp_path / "single.npz")))
  assert s1.shape == (3, 3, 1)  # (N, H, W) got a channel axis
  assert s1.num_train_items == 41 and len(s1.eval_items("test")) == 4
  np.testing.assert_array_equal(s1.eval_items("test"), s2.eval_items("test"))  # fixed holdout
  ids = np.concatenate([item_ids(s1.eval_items("train")), item_ids(s1.eval_items("test"))])
  np.testing.assert_array_equal(np.sort(ids), np.arange(45))
  assert np.array_equal(s1.eval_items("train")[:, :, :, 0], gray[np.sort(item_ids(s1.eval_items("train")))])


def test_npz_errors(tmp_path):
  np.savez(tmp_path / "big.npz", train_x=np.full((4, 2, 2, 1), 200, np.uint8), test_x=np.zeros((2, 2, 2, 1), np.uint8))
  with pytest.raises(ValueError, match=r"0\.\.199.*num_classes to at least 201"):
    data.load(cfg(name="npz", path=str(tmp_path / "big.npz"), num_classes=200))
  np.savez(tmp_path / "keys.npz", pixels=np.zeros((4, 2, 2), np.uint8))
  with pytest.raises(ValueError, match="train_x/test_x"):
    data.load(cfg(name="npz", path=str(tmp_path / "keys.npz")))
  np.savez(tmp_path / "float.npz", x=np.zeros((4, 2, 2), np.float32))
  with pytest.raises(ValueError, match="dtype float32"):
    data.load(cfg(name="npz", path=str(tmp_path / "float.npz")))
  with pytest.raises(ValueError, match="data.path is not set"):
    data.load(cfg(name="npz"))


def test_real_cifar10_subset_npz():
  path = shared_data_dir() / "cifar10_subset" / "cifar10_subset.npz"
  ds = data.load(cfg(name="npz", path=str(path)))
  raw = np.load(path)
  assert (ds.shape, ds.num_classes, ds.num_train_items) == ((32, 32, 3), 256, 4000)
  np.testing.assert_array_equal(ds.eval_items("test"), raw["test_x"])
  assert ds.eval_items("train")[0, 0, :3, 0].tolist() == [59, 43, 50]  # CIFAR-10 data_batch_1 image 0
  idx = ds.train_indices(3, 16, seed=0)
  np.testing.assert_array_equal(ds.train_batch(3, 16, seed=0), raw["train_x"][idx])


def test_png_folder(tmp_path):
  from PIL import Image

  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, size=(12, 5, 4, 3), dtype=np.uint8)
  folder = tmp_path / "rgb"
  folder.mkdir()
  for i, x in enumerate(rgb):
    Image.fromarray(x).save(folder / f"img_{i:02d}.png")
  (folder / "notes.txt").write_text("ignored")
  ds = data.load(cfg(name="png_folder", path=str(folder)))
  assert (ds.kind, ds.shape, ds.num_classes, ds.num_train_items) == ("image", (5, 4, 3), 256, 11)
  all_x = np.concatenate([ds.eval_items("train"), ds.eval_items("test")])
  key = lambda x: sorted(map(bytes, x.astype(np.uint8)))
  assert key(all_x) == key(rgb)  # pixel-exact, nothing lost or duplicated
  again = data.load(cfg(name="png_folder", path=str(folder)))
  np.testing.assert_array_equal(again.eval_items("test"), ds.eval_items("test"))

  gray_dir = tmp_path / "gray"
  gray_dir.mkdir()
  for i in range(3):
    Image.fromarray(np.full((6, 7), 10 * i, np.uint8), mode="L").save(gray_dir / f"{i}.png")
  gray = data.load(cfg(name="png_folder", path=str(gray_dir)))
  assert gray.shape == (6, 7, 1)

  Image.fromarray(np.zeros((6, 8), np.uint8)).save(gray_dir / "9_odd.png")
  with pytest.raises(ValueError, match="9_odd.png"):
    data.load(cfg(name="png_folder", path=str(gray_dir)))


# ---- tfds and dispatch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_tfds_not_prepared_fails_fast(name, tmp_path):
  empty = tmp_path / "tfds"
  empty.mkdir()
  with pytest.raises(ValueError) as err:
    data.load(cfg(name=name, tfds_data_dir=str(empty)))
  msg = str(err.value)
  assert "\n" not in msg
  for part in (f"--datasets={name}", f"tfds build {name}", "tfds_data_dir", "npz"):
    assert part in msg
  assert not any(empty.iterdir())  # nothing was downloaded or written


def test_tfds_images_wiring(monkeypatch):
  calls = []
  monkeypatch.setattr(tfds_util, "require_prepared", lambda *a: calls.append(a))
  fake = {"train": np.ones((5, 28, 28, 1), np.uint8), "test": np.zeros((2, 28, 28, 1), np.uint8)}
  monkeypatch.setattr(tfds_util, "load_split_numpy", lambda name, split, data_dir: fake[split])
  ds = data.load(cfg(name="mnist", tfds_data_dir="/somewhere"))
  assert calls == [("mnist", "/somewhere", False)]
  assert (ds.name, ds.shape, ds.num_classes, ds.num_train_items) == ("mnist", (28, 28, 1), 256, 5)
  with pytest.raises(ValueError, match=r"expected \(N, 32, 32, 3\) uint8"):
    images.load_tfds_images(cfg(), "cifar10")


def test_unknown_source():
  with pytest.raises(ValueError, match="unknown data.name 'cifar100'.*digits"):
    data.load(cfg(name="cifar100"))


# ---- augmentation (data.augment='flip_rot90', the official CIFAR-10 pipeline's flips and quarter turns) ----------


def square_images(n=40, side=4, channels=3, seed=0):
  """Random items whose 8 flips/rotations are all distinct, so a transform can be identified from its result."""
  return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, channels)).astype(np.uint8)


def symmetry_index(aug_HxWxC, plain_HxWxC):
  """Which (flip, quarter turns) maps `plain` to `aug`, as 4 * flip + k; an error if none does."""
  found = [
    4 * flip + k
    for flip in (0, 1)
    for k in range(4)
    if np.array_equal(np.rot90(plain_HxWxC[:, ::-1] if flip else plain_HxWxC, k, axes=(0, 1)), aug_HxWxC)
  ]
  assert len(found) == 1, f"augmented item is not a single flip/rotation of its source ({found})"
  return found[0]


def augmented_pair(x, augment="flip_rot90"):
  splits = {"train": x, "test": x[:5]}
  return (data.ArrayDataset("sq", "image", splits, 256), data.ArrayDataset("sq", "image", splits, 256, augment=augment))


def test_flip_rot90_follows_tf_flip_then_counter_clockwise_rot90():
  # [[a, b], [c, d]]: tf.image.rot90(k=1) gives [[b, d], [a, c]]; flip_left_right first then rot90 gives the
  # transpose [[a, c], [b, d]] (rotating first and flipping after would give [[d, b], [c, a]]).
  x_1x2x2x1 = np.array([[1, 2], [3, 4]]).reshape(1, 2, 2, 1)
  turned = base.flip_rot90(x_1x2x2x1, np.array([0]), np.array([1]))
  flipped_turned = base.flip_rot90(x_1x2x2x1, np.array([1]), np.array([1]))
  assert turned[0, ..., 0].tolist() == [[2, 4], [1, 3]]
  assert flipped_turned[0, ..., 0].tolist() == [[1, 3], [2, 4]]
  assert base.flip_rot90(x_1x2x2x1, np.array([0]), np.array([0]))[0, ..., 0].tolist() == [[1, 2], [3, 4]]


def test_augmented_batch_is_a_symmetry_of_the_plain_batch_item_by_item():
  plain, aug = augmented_pair(square_images())
  counts = np.zeros(8, int)
  for step in range(16):  # 16 x 32 = 512 draws, crossing several epochs of 40 items
    x_plain, x_aug = plain.train_batch(step, 32, seed=3), aug.train_batch(step, 32, seed=3)
    assert x_aug.dtype == x_plain.dtype == np.int32 and x_aug.shape == x_plain.shape
    for i in range(len(x_plain)):
      counts[symmetry_index(x_aug[i], x_plain[i])] += 1
  # Flip and quarter turn independent and uniform: each of the 8 symmetries about 1/8 of the time (64 expected).
  assert counts.min() > 30 and counts.max() < 100, counts


def test_augmentation_deterministic_resumable_and_sliced_like_the_batch():
  _, aug = augmented_pair(square_images())
  first = aug.train_batch(5, 16, seed=1)
  np.testing.assert_array_equal(first, aug.train_batch(5, 16, seed=1))  # a resumed run draws the same
  assert not np.array_equal(first, aug.train_batch(5, 16, seed=2))
  slices = [aug.train_batch(5, 16, seed=1, process_index=p, process_count=4) for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(slices), first)


def test_eval_items_are_never_augmented():
  x = square_images()
  plain, aug = augmented_pair(x)
  np.testing.assert_array_equal(aug.eval_items("test"), plain.eval_items("test"))
  np.testing.assert_array_equal(aug.eval_items("train"), x.astype(np.int32))


def test_bad_augment_values_are_refused_in_one_line(tmp_path):
  with pytest.raises(ValueError, match=r"data.augment must be one of 'none', 'flip_rot90', got 'flip'") as err:
    augmented_pair(square_images(), augment="flip")
  assert "\n" not in str(err.value)
  with pytest.raises(ValueError, match=r"needs square \(H, W, C\) items.*\(4, 6, 3\).*data.augment='none'"):
    data.ArrayDataset("wide", "image", {"train": np.zeros((3, 4, 6, 3), np.uint8)}, 256, augment="flip_rot90")
  # Checked from the config before anything is read: the missing file is not what fails.
  with pytest.raises(ValueError, match="data.augment must be one of"):
    data.load(cfg(name="npz", path=str(tmp_path / "missing.npz"), augment="rot90"))
  path = tmp_path / "sq.npz"
  np.savez(path, train_x=square_images(), test_x=square_images(4))
  assert data.load(cfg(name="npz", path=str(path), augment="flip_rot90")).augment == "flip_rot90"
  assert data.load(cfg(name="npz", path=str(path))).augment == "none"
