"""Exported model folders (`ardm export`, `--model DIR`): every job gives the same numbers and bytes from the folder
as from the workdir, for image, text, upscale and audio models; damaged or foreign folders are refused in one line."""

import json
import os
import shutil
import subprocess
import sys
import types

from conftest import expect_error, restore_full_state, run
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_compress import image_inputs, same_content
from test_compress_models import AUDIO_L, audio_config, digits_upscale_config, random_workdir, wav_content, wav_inputs

from ardm_jax import coding_model, configs, model_card, model_dir
from ardm_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDD = os.path.join(os.path.dirname(REPO), "shared", "data", "fsdd", "fsdd_8khz.npz")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  """A digits workdir (a random model, as in test_compress: no training) with the command `ardm train` records, a
  policy file and an eval result (`workdir_eval`); and its exported folder."""
  from ardm_jax import train
  from ardm_jax.train_state import DataSpec

  root = tmp_path_factory.mktemp("export")
  w = root / "digits"
  config = configs.load_config_file(os.path.join(REPO, "experiments", "digits.py:tiny"))
  random_workdir(w, config, DataSpec(name="digits", kind="image", shape=(8, 8, 1), num_classes=17))
  with pytest.MonkeyPatch.context() as mp:  # what `ardm train` writes beside the training it runs
    mp.setattr(train, "train_and_evaluate", lambda config, workdir: None)
    run(
      "train",
      "--config",
      os.path.join(REPO, "experiments", "digits.py:tiny"),
      "--workdir",
      w,
      "--config.train.num_steps=3",
    )
  assert (w / configs.TRAIN_COMMANDS_FILE).read_text().endswith(" --config.train.num_steps=3\n")
  run("policy", "--workdir", w, "--budgets", "4", "--samples", "2")
  run("eval", "--workdir", w)
  run("export", "--workdir", w, "-o", root / "digits_model", "--license", "apache-2.0")
  return w, root / "digits_model"


def workdir_eval(w):
  """The one eval result the fixture's `ardm eval` wrote in the workdir (eval_stepN.json)."""
  (path,) = w.glob("eval_step*.json")
  return path


def eval_result(path):
  result = json.load(open(path))
  del result["seconds"]  # wall time: the one field that may differ
  return result


@pytest.mark.xdist_group("test_export")
def test_digits_folder_reproduces_every_job(digits, tmp_path, capsys):
  w, m = digits
  assert sorted(os.listdir(m)) == ["README.md", "config.json", "model.safetensors", "policy.json"]
  meta = json.load(open(m / "config.json"))
  assert meta["format"] == configs.MODEL_FORMAT and meta["format_version"] == model_dir.FORMAT_VERSION
  assert "path" not in meta["config"]["data"] and "mesh" not in meta["config"] and "optim" not in meta["config"]
  # The fingerprint the compressor writes: the same from the folder and from the workdir.
  from_folder, from_workdir = model_dir.open_model_dir(str(m)), workdir_lib.open_workdir(str(w))
  assert meta["config_hash"] == from_workdir.config_hash == from_folder.config_hash
  assert (
    meta["fingerprint"] == coding_model.model_fingerprint(from_folder) == coding_model.model_fingerprint(from_workdir)
  )
  # eval: the same result JSON (the workdir's was written before the export).
  run("eval", "--model", m, "--out", tmp_path / "eval.json")
  assert eval_result(tmp_path / "eval.json") == eval_result(workdir_eval(w))
  # sample with the DP policy (the folder's copy of policy.json) and inpaint: the same bytes.
  for src, name in (("--workdir", w), ("--model", m)):
    run("sample", src, name, "--num", "3", "--budget", "4", "--out", tmp_path / f"s{src}.png")
    np.save(tmp_path / f"digit{src}.npy", np.arange(64).reshape(8, 8, 1) % 17)
    run(
      "inpaint",
      src,
      name,
      "--input",
      tmp_path / f"digit{src}.npy",
      "--num",
      "2",
      "--budget",
      "4",
      "--naive",
      "--out",
      tmp_path / f"i{src}.png",
    )
  for stem in ("s", "i"):
    assert (tmp_path / f"{stem}--workdir.png").read_bytes() == (tmp_path / f"{stem}--model.png").read_bytes()
  # policy estimated with the folder: the same file.
  run("policy", "--model", m, "--budgets", "4", "--samples", "2", "--out", tmp_path / "policy.json")
  assert json.load(open(tmp_path / "policy.json")) == json.load(open(w / "policy.json"))
  # compress: the same bytes; each decodes with the other.
  src = tmp_path / "in"
  src.mkdir()
  paths = image_inputs(src)[:3]
  run("compress", "--workdir", w, *paths, "-o", tmp_path / "w.ardm", "--budget", "4")
  run("compress", "--model", m, *paths, "-o", tmp_path / "m.ardm", "--budget", "4")
  assert (tmp_path / "w.ardm").read_bytes() == (tmp_path / "m.ardm").read_bytes()
  run("decompress", "--model", m, tmp_path / "w.ardm", "-o", tmp_path / "dm")
  run("decompress", "--workdir", w, tmp_path / "m.ardm", "-o", tmp_path / "dw")
  for i, p in enumerate(paths):
    assert same_content(p, tmp_path / "dm" / f"item_{i:04d}.png")
    assert same_content(p, tmp_path / "dw" / f"item_{i:04d}.png")
  capsys.readouterr()


@pytest.mark.xdist_group("test_export")
def test_export_prints_sizes_and_writes_a_model_card(digits, tmp_path, capsys):
  w, m = digits
  run("export", "--workdir", w, "-o", tmp_path / "again")
  printed = capsys.readouterr().out
  assert "model.safetensors" in printed and "the workdir's checkpoint of step 0" in printed
  folder = sum(os.path.getsize(tmp_path / "again" / n) for n in os.listdir(tmp_path / "again"))
  checkpoint = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(w / "checkpoints" / "0") for f in fs)
  assert f"{folder / 1e6:.2f} MB" in printed and f"{checkpoint / 1e6:.2f} MB" in printed
  assert folder <= 0.4 * checkpoint  # EMA parameters only: no optimizer state, no second copy
  card = (m / "README.md").read_text()
  assert card.startswith("---\n") and card.count("---\n") >= 2
  yaml = pytest.importorskip("yaml")
  front = yaml.safe_load(card.split("---\n")[1])
  assert front["library_name"] == "ardm_jax" and front["license"] == "apache-2.0" and front["datasets"] == ["digits"]
  assert "ardm" in front["tags"] and "image" in front["tags"]
  bpd = json.load(open(workdir_eval(w)))["bpd"]
  assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == round(bpd, 4)
  assert f"{bpd:.4f}" in card and "ardm train --config" in card and "--config.train.num_steps=3" in card
  assert "ardm sample --model" in card and "ardm compress --model" in card and "0 steps of batch 8" in card


@pytest.fixture(scope="module")
def others(tmp_path_factory):
  """Text, upscale and 16-bit audio workdirs holding random models (as in test_compress: no training) and their
  folders."""
  from ardm_jax import data
  from ardm_jax.train_state import DataSpec

  root = tmp_path_factory.mktemp("export_others")
  workdirs = {"text": root / "text", "upscale": root / "upscale", "audio": root / "audio"}
  text = configs.apply_overrides(
    configs.load_config_file(os.path.join(REPO, "experiments", "local_text.py:tiny")), ["--config.data.name=pydoc_text"]
  )
  random_workdir(workdirs["text"], text, DataSpec.of_dataset(data.load(text.data)))
  random_workdir(
    workdirs["upscale"],
    digits_upscale_config("data"),
    DataSpec(name="digits", kind="image", shape=(8, 8, 1), num_classes=17),
  )
  random_workdir(
    workdirs["audio"],
    audio_config(),
    DataSpec(name="fsdd", kind="audio", shape=(AUDIO_L,), num_classes=1 << 16, sample_rate=8000, bits=16),
  )
  for kind, w in workdirs.items():
    model_dir.export(str(w), str(root / f"{kind}_model"))
  return {kind: (w, root / f"{kind}_model") for kind, w in workdirs.items()}


def inputs_for(kind, d):
  d.mkdir()
  if kind == "text":
    (d / "a.txt").write_text("the quick brown fox jumps over the lazy dog\n")
    return [d / "a.txt"]
  if kind == "audio":
    return wav_inputs(d)[:2]
  return image_inputs(d)[:2]


@pytest.mark.parametrize("kind", ["text", "upscale", "audio"])
@pytest.mark.xdist_group("test_export")
def test_text_upscale_and_audio_folders_reproduce_the_jobs(kind, others, tmp_path, capsys):
  w, m = others[kind]
  data = []
  if kind == "audio":
    if not os.path.exists(FSDD):
      if os.environ.get("CI") == "true":
        pytest.fail(f"{FSDD} is missing in CI: the shared data folder must sit beside the repository")
      pytest.skip("shared data not present")
    data = ["--data-path", FSDD]  # the folder does not say where the data lies
  if kind != "upscale":  # (held-out evaluation of images is the digits test's)
    run("eval", "--workdir", w, "--out", tmp_path / "w.json")
    run("eval", "--model", m, *data, "--out", tmp_path / "m.json")
    assert eval_result(tmp_path / "w.json") == eval_result(tmp_path / "m.json")
  if kind == "text":  # (sampling and completion of images are the digits test's)
    for src, name in (("--workdir", w), ("--model", m)):
      run("sample", src, name, "--num", "2", "--budget", "6", "--naive", "--out", tmp_path / f"s{src}.txt")
    assert (tmp_path / "s--workdir.txt").read_bytes() == (tmp_path / "s--model.txt").read_bytes()
    (tmp_path / "gap.txt").write_text("the quick ____n fox")
    for src, name in (("--workdir", w), ("--model", m)):
      run("inpaint", src, name, "--input", tmp_path / "gap.txt", "--num", "2", "--out", tmp_path / f"i{src}.txt")
    assert (tmp_path / "i--workdir.txt").read_text() == (tmp_path / "i--model.txt").read_text()
  paths = inputs_for(kind, tmp_path / "in")
  run("compress", "--workdir", w, *paths, "-o", tmp_path / "w.ardm", "--budget", "6", "--naive")
  run("compress", "--model", m, *paths, "-o", tmp_path / "m.ardm", "--budget", "6", "--naive")
  assert (tmp_path / "w.ardm").read_bytes() == (tmp_path / "m.ardm").read_bytes()
  run("decompress", "--model", m, tmp_path / "w.ardm", "-o", tmp_path / "dm")
  restored = sorted(os.listdir(tmp_path / "dm"))
  assert len(restored) == len(paths)
  for p, r in zip(paths, restored):
    if kind == "audio":
      assert wav_content(p) == wav_content(tmp_path / "dm" / r)
    else:
      assert same_content(str(p), str(tmp_path / "dm" / r))
  capsys.readouterr()


@pytest.mark.xdist_group("test_export")
def test_export_writes_the_ema_parameters_or_with_raw_the_raw_ones(digits, tmp_path, capsys):
  from safetensors.numpy import load_file

  from ardm_jax import checkpoint

  w, _ = digits
  shutil.copytree(w, tmp_path / "w")
  model = workdir_lib.open_workdir(str(tmp_path / "w"))
  state = restore_full_state(model)
  state = state.replace(ema_params=jax.tree.map(lambda p: p * 0.5 + 1.0, state.params))  # an EMA unlike the raw
  manager = checkpoint.make_manager(str(tmp_path / "w"), async_save=False)
  checkpoint.save(manager, 1, state, {"step": 1})
  manager.close()
  run("export", "--workdir", tmp_path / "w", "-o", tmp_path / "ema")
  run("export", "--workdir", tmp_path / "w", "--raw", "--step", "1", "-o", tmp_path / "raw")
  names = model_dir.tensor_names(state.params)
  for kind, tree in (("ema", state.ema_params), ("raw", state.params)):
    meta = json.load(open(tmp_path / kind / "config.json"))
    assert meta["params"]["kind"] == kind and meta["step"] == 1
    tensors = load_file(str(tmp_path / kind / "model.safetensors"))
    for name, leaf in zip(names, jax.tree.leaves(tree)):
      np.testing.assert_array_equal(tensors[name], np.asarray(leaf), err_msg=f"{kind} {name}")
  capsys.readouterr()


def test_parameters_keep_their_dtypes_and_restore_onto_a_mesh(tmp_path):
  from safetensors.numpy import save_file

  rng = np.random.default_rng(0)
  tree = {
    "a": {"kernel": rng.normal(size=(3, 4)).astype(jnp.bfloat16), "bias": np.arange(4, dtype=np.float16)},
    "count": np.array([7, -2], np.int32),
    "scalar": np.array(1.5, np.float32),
  }
  save_file(
    {"a/kernel": tree["a"]["kernel"], "a/bias": tree["a"]["bias"], "count": tree["count"], "scalar": tree["scalar"]},
    str(tmp_path / "p.safetensors"),
  )
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  shardings = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), tree)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  loaded = model_dir.load_params(
    str(tmp_path / "p.safetensors"), abstract, shardings, sha256=model_dir.file_sha256(str(tmp_path / "p.safetensors"))
  )
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(tree)):
    assert got.dtype == want.dtype and got.shape == want.shape and got.sharding.mesh == mesh
    np.testing.assert_array_equal(np.asarray(got), want)
  wrong = dict(abstract, count=jax.ShapeDtypeStruct((2,), jnp.int64 if jax.config.x64_enabled else jnp.uint32))
  with pytest.raises(ValueError, match="tensor 'count' is int32\\[2\\] but the network of config.json needs"):
    model_dir.load_params(str(tmp_path / "p.safetensors"), wrong, shardings)


@pytest.mark.xdist_group("test_export")
def test_a_folder_restores_onto_another_device_count(digits, tmp_path):
  """Two CPU devices (the folder was written from one): the same fingerprint, parameters on both devices, the
  same held-out number up to float rounding, and a file compressed here (one device, two items in one batch)
  decodes exactly there (the coder runs its network on one device whatever the count)."""
  w, m = digits
  items = np.random.default_rng(3).integers(0, 17, size=(2, 8, 8, 1))
  inputs = [str(tmp_path / f"in{i}.npy") for i in range(2)]
  for path, item in zip(inputs, items):
    np.save(path, item)
  assert run("compress", "--workdir", w, *inputs, "--keep-names", "-o", tmp_path / "two.ardm") == 0
  script = f"""
import jax, json
from ardm_jax import cli, coding_model, model_dir
assert len(jax.devices()) == 2
model = model_dir.open_model_dir({str(m)!r})
assert all(len(p.sharding.device_set) == 2 for p in jax.tree.leaves(model.params))
assert coding_model.model_fingerprint(model) == json.load(open({str(m / "config.json")!r}))["fingerprint"]
assert cli.main(["eval", "--model", {str(m)!r}, "--out", {str(tmp_path / "eval.json")!r}]) == 0
assert cli.main(["decompress", "--model", {str(m)!r}, {str(tmp_path / "two.ardm")!r}, "-o", {str(tmp_path / "out")!r}]) == 0
"""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
  one, two = eval_result(workdir_eval(w)), eval_result(tmp_path / "eval.json")
  assert two["bpd"] == pytest.approx(one["bpd"], rel=1e-5) and two["config_hash"] == one["config_hash"]
  for i, item in enumerate(items):
    np.testing.assert_array_equal(np.load(tmp_path / "out" / f"in{i}.npy"), item)


@pytest.mark.xdist_group("test_export")
def test_damaged_and_foreign_folders_are_refused_in_one_line(digits, tmp_path, capsys):
  w, m = digits

  def copy(name, edit=None):
    d = tmp_path / name
    shutil.copytree(m, d)
    if edit is not None:
      meta = json.load(open(d / "config.json"))
      edit(meta)
      json.dump(meta, open(d / "config.json", "w"))
    return d

  def refused(d, match):
    expect_error(capsys, "sample", "--model", d, "--out", tmp_path / "s.png", match=match)

  truncated = copy("truncated")
  data = (truncated / "model.safetensors").read_bytes()
  (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
  refused(truncated, "model.safetensors is damaged or truncated")
  no_hash = copy("no_hash", lambda meta: meta["params"].pop("sha256"))
  (no_hash / "model.safetensors").write_bytes(data[: len(data) // 2])
  refused(no_hash, "model.safetensors is damaged or not a safetensors file")
  # A tensor of another shape than the config's network (the file otherwise intact, its hash updated).
  from safetensors.numpy import load_file, save_file

  reshaped = copy("reshaped")
  tensors = load_file(str(m / "model.safetensors"))
  tensors["conv_in/bias"] = tensors["conv_in/bias"][:-1]
  save_file(tensors, str(reshaped / "model.safetensors"))
  meta = json.load(open(reshaped / "config.json"))
  meta["params"]["sha256"] = model_dir.file_sha256(str(reshaped / "model.safetensors"))
  json.dump(meta, open(reshaped / "config.json", "w"))
  refused(reshaped, "tensor 'conv_in/bias' is float32[15] but the network of config.json needs float32[16]")
  missing = copy("missing")
  os.remove(missing / "config.json")
  refused(missing, "config.json is missing")
  refused(copy("future", lambda meta: meta.update(format_version=99)), "format_version 99")
  refused(copy("broken", lambda meta: meta["config"].pop("model")), "config has no 'model' section")
  foreign = tmp_path / "bert"
  foreign.mkdir()
  (foreign / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
  refused(foreign, "is not an ardm_jax model")
  refused(w, "is a training workdir, not a model folder")
  expect_error(capsys, "sample", "--workdir", m, "--out", tmp_path / "s.png", match="is an exported model folder")
  expect_error(
    capsys,
    "compress",
    "--workdir",
    m,
    tmp_path / "x.png",
    "-o",
    tmp_path / "x.ardm",
    match="is an exported model folder",
  )
  # Options that belong to workdirs, and outputs a model folder cannot take.
  expect_error(capsys, "eval", "--model", m, "--step", "0", "--out", tmp_path / "e.json", match="--step and --raw")
  expect_error(capsys, "eval", "--model", m, match="--out is required with --model")
  expect_error(capsys, "sample", "--model", m, match="--out is required with --model")
  expect_error(capsys, "policy", "--model", m, "--budgets", "4", match="--out is required with --model")
  expect_error(
    capsys,
    "policy",
    "--model",
    m,
    "--budgets",
    "4",
    "--use-tracker",
    "--out",
    tmp_path / "p.json",
    match="--use-tracker needs --workdir",
  )
  expect_error(
    capsys, "eval", "--workdir", w, "--data-path", "x", "--out", tmp_path / "e.json", match="--data-path is for --model"
  )
  # Export never writes into a non-empty folder.
  expect_error(capsys, "export", "--workdir", w, "-o", m, match="exists and is not an empty folder")
  expect_error(capsys, "export", "--workdir", m, "-o", tmp_path / "new", match="already a model folder")


def test_the_hub_module_carries_the_users_endpoint_and_offline_setting():
  # huggingface_hub loads `constants` lazily: read before anything imported it, the push probed the default host
  # whatever HF_ENDPOINT said. A fresh process, so no other test has imported it.
  code = "from ardm_jax import model_card; c = model_card.hub_module().constants; print(c.ENDPOINT, c.HF_HUB_OFFLINE)"
  env = dict(os.environ, HF_ENDPOINT="https://hub.example", HF_HUB_OFFLINE="1")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
  assert out.split() == ["https://hub.example", "True"]


@pytest.mark.xdist_group("test_export")
def test_push_uploads_the_folder_or_fails_in_one_line(digits, tmp_path, capsys, monkeypatch):
  w, _ = digits
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
  expect_error(
    capsys, "export", "--workdir", w, "-o", tmp_path / "a", "--push", "me/digits", match="pip install 'ardm_jax[hub]'"
  )
  assert not os.path.exists(tmp_path / "a")  # refused before writing anything
  calls = []

  class FakeApi:
    def create_repo(self, repo_id, **kwargs):
      calls.append(("create", repo_id, kwargs["private"]))
      return f"https://hub.example/{repo_id}"

    def upload_folder(self, folder_path, repo_id, **kwargs):
      calls.append(("upload", repo_id, sorted(os.listdir(folder_path))))

  fake = types.SimpleNamespace(HfApi=FakeApi, constants=types.SimpleNamespace(ENDPOINT="https://hub.example"))
  monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
  monkeypatch.setattr(model_card, "check_reachable", lambda endpoint: None)
  run("export", "--workdir", w, "-o", tmp_path / "b", "--push", "me/digits", "--private")
  assert calls == [
    ("create", "me/digits", True),
    ("upload", "me/digits", ["README.md", "config.json", "model.safetensors", "policy.json"]),
  ]
  assert "pushed to https://hub.example/me/digits" in capsys.readouterr().out
  card = (tmp_path / "b" / "README.md").read_text()  # the pushed model's usage: by its hub name
  assert "ardm sample --model hf:me/digits --num 16" in card and "hf download me/digits --local-dir" in card

  class RefusingApi(FakeApi):
    def upload_folder(self, folder_path, repo_id, **kwargs):
      raise RuntimeError("401 Client Error: Unauthorized\nInvalid credentials in Authorization header")

  monkeypatch.setattr(fake, "HfApi", RefusingApi)
  expect_error(
    capsys,
    "export",
    "--workdir",
    w,
    "-o",
    tmp_path / "d",
    "--push",
    "me/digits",
    match="pushing " + str(tmp_path / "d") + " to me/digits failed: 401 Client Error: Unauthorized",
  )

  def no_network(*args, **kwargs):
    raise OSError("Network is unreachable")

  monkeypatch.undo()
  monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
  monkeypatch.setattr("socket.create_connection", no_network)
  expect_error(
    capsys,
    "export",
    "--workdir",
    w,
    "-o",
    tmp_path / "c",
    "--push",
    "me/digits",
    match="cannot reach https://hub.example",
  )
  assert os.path.exists(tmp_path / "c" / "model.safetensors")  # the folder is written; only the push failed


class RepositoryNotFoundError(OSError):
  """huggingface_hub's errors are told apart by class name (ardm_jax/hub.py), as these fakes are."""


class RevisionNotFoundError(OSError):
  pass


class LocalEntryNotFoundError(FileNotFoundError):
  pass


class FakeHub:
  """huggingface_hub as `--model hf:...` uses it: `snapshot_download` serving model repos (repo_id -> revision ->
  (commit, folder)) into a cache laid out as the hub library's (models--ORG--NAME/refs/REVISION holds the commit of
  snapshots/COMMIT/), a network switch, and HF_HUB_OFFLINE in `constants`. `calls` records each download."""

  def __init__(self, cache, repos):
    self.cache, self.repos, self.online, self.calls = cache, repos, True, []
    self.module = types.SimpleNamespace(
      snapshot_download=self.snapshot_download, constants=types.SimpleNamespace(HF_HUB_OFFLINE=False)
    )

  def snapshot_download(self, repo_id, *, revision=None, local_files_only=False, allow_patterns=None, **kwargs):
    import fnmatch

    assert kwargs["library_name"] == "ardm_jax"
    self.calls.append((repo_id, revision, local_files_only, allow_patterns))
    revision = revision or "main"
    storage = self.cache / ("models--" + repo_id.replace("/", "--"))
    if local_files_only:
      ref = storage / "refs" / revision
      snapshot = storage / "snapshots" / (ref.read_text() if ref.exists() else revision)
      if not (snapshot / "config.json").exists():
        raise LocalEntryNotFoundError(
          "Cannot find an appropriate cached snapshot folder for the specified revision on the local disk and "
          "outgoing traffic has been disabled.\nTo enable repo look-ups and downloads online, pass "
          "'local_files_only=False' as input."
        )
      return str(snapshot)
    if not self.online:
      raise ConnectionError("[Errno 101] Network is unreachable")
    if repo_id not in self.repos:
      raise RepositoryNotFoundError(f"404 Client Error.\n\nRepository Not Found for url: .../{repo_id}")
    if revision not in self.repos[repo_id]:
      raise RevisionNotFoundError(f"404 Client Error.\n\nRevision Not Found for url: .../{revision}")
    commit, folder = self.repos[repo_id][revision]
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(folder):
      if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
        if not (snapshot / name).exists():
          shutil.copyfile(folder / name, snapshot / name)
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return str(snapshot)


@pytest.mark.xdist_group("test_export")
def test_a_hub_name_downloads_once_and_opens_offline_from_the_cache(digits, tmp_path, capsys, monkeypatch):
  from ardm_jax import hub as hub_lib

  _, m = digits
  hub = FakeHub(tmp_path / "cache", {"me/digits": {"main": ("a" * 40, m), "v1": ("b" * 40, m)}})
  monkeypatch.setitem(sys.modules, "huggingface_hub", hub.module)
  sample = ("--num", "3", "--budget", "4", "--seed", "1")  # the shapes the digits test samples: compiled once
  run("sample", "--model", m, *sample, "--out", tmp_path / "local.png")
  run("sample", "--model", "hf:me/digits", *sample, "--out", tmp_path / "hub.png")
  assert (tmp_path / "hub.png").read_bytes() == (tmp_path / "local.png").read_bytes()
  snapshot = tmp_path / "cache" / "models--me--digits" / "snapshots" / ("a" * 40)
  assert sorted(os.listdir(snapshot)) == sorted(os.listdir(m))
  # config.json first (its format checked), then the rest of the repository
  assert hub.calls == [("me/digits", None, False, ["config.json"]), ("me/digits", None, False, None)]
  # No network: the cached copy, after the call that failed to connect.
  hub.online, hub.calls = False, []
  run("sample", "--model", "hf:me/digits", *sample, "--out", tmp_path / "offline.png")
  assert (tmp_path / "offline.png").read_bytes() == (tmp_path / "local.png").read_bytes()
  assert [c[2] for c in hub.calls] == [False, True, False, True]
  # HF_HUB_OFFLINE: the cache alone, no connection tried.
  hub.module.constants.HF_HUB_OFFLINE, hub.calls = True, []
  assert hub_lib.local_folder("hf:me/digits") == str(snapshot) and all(c[2] for c in hub.calls)
  # @REVISION goes to the hub as it is; nothing is written into the cached copy it names.
  hub.module.constants.HF_HUB_OFFLINE, hub.online, hub.calls = False, True, []
  v1 = snapshot.parent / ("b" * 40)
  expect_error(
    capsys,
    "sample",
    "--model",
    "hf:me/digits@v1",
    "--out",
    v1 / "s.png",
    match=f"{v1 / 's.png'} is inside the hub cache's copy of hf:me/digits@v1; nothing is written",
  )
  assert {c[1] for c in hub.calls} == {"v1"} and sorted(os.listdir(v1)) == sorted(os.listdir(m))
  expect_error(
    capsys, "sample", "--model", "hf:me/digits", "--out", snapshot.parent.parent / "x.png", match="is inside the hub"
  )
  expect_error(capsys, "sample", "--model", "hf:me/digits", match="--out is required with --model")


@pytest.mark.xdist_group("test_export")
def test_hub_names_fail_in_one_line(digits, tmp_path, capsys, monkeypatch):
  _, m = digits
  (tmp_path / "in.npy").write_bytes(b"")
  (tmp_path / "in.ardm").write_bytes(b"")
  jobs = {  # every job that takes --model, with its other required arguments
    "sample": ["--out", tmp_path / "s.png"],
    "eval": ["--out", tmp_path / "e.json"],
    "inpaint": ["--input", tmp_path / "in.npy"],
    "policy": ["--budgets", "4", "--out", tmp_path / "p.json"],
    "compress": [tmp_path / "in.npy", "-o", tmp_path / "c.ardm"],
    "decompress": [tmp_path / "in.ardm", "-o", tmp_path / "d"],
  }
  for job, rest in jobs.items():
    for name in ("hf:", "hf:noslash", "hf:a/b@", "hf:a/b/c", "hf:/b"):
      expect_error(capsys, job, "--model", name, *rest, match=f"{name!r} is not a hub model name: expected hf:ORG/NAME")
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
  expect_error(
    capsys,
    "sample",
    "--model",
    "hf:me/digits",
    *jobs["sample"],
    match="--model hf:me/digits needs huggingface_hub: pip install 'ardm_jax[hub]'",
  )
  foreign = tmp_path / "bert"
  foreign.mkdir()
  (foreign / "config.json").write_text('{"model_type": "bert"}')
  (foreign / "model.safetensors").write_bytes(b"\0" * 1000)
  hub = FakeHub(
    tmp_path / "cache", {"me/digits": {"main": ("a" * 40, m)}, "google/bert": {"main": ("c" * 40, foreign)}}
  )
  monkeypatch.setitem(sys.modules, "huggingface_hub", hub.module)

  def refused(name, match):
    for job in ("sample", "compress"):
      expect_error(capsys, job, "--model", name, *jobs[job], match=match)

  refused(
    "hf:me/nothing",
    "error: hf:me/nothing: no such model repo on the hub (check the name, or log in with `hf auth login`",
  )
  refused("hf:me/digits@nope", "hf:me/digits@nope: the repo has no such revision")
  # Another library's repo: refused after its config.json, before its weights.
  refused("hf:google/bert", "hf:google/bert is not an ardm_jax model folder (its config.json has format None")
  assert os.listdir(tmp_path / "cache" / "models--google--bert" / "snapshots" / ("c" * 40)) == ["config.json"]
  hub.online = False
  refused(
    "hf:me/digits",
    "hf:me/digits is not in the local hub cache and the hub cannot be reached ([Errno 101] Network is unreachable); "
    "connect, or pass a local folder with --model DIR",
  )
  hub.module.constants.HF_HUB_OFFLINE = True
  refused("hf:me/digits", "hf:me/digits is not in the local hub cache and the hub cannot be reached (HF_HUB_OFFLINE")
  # A cached copy edited after the download: the folder's own SHA-256 check refuses it.
  hub.module.constants.HF_HUB_OFFLINE, hub.online = False, True
  snapshot = tmp_path / "cache" / "models--me--digits" / "snapshots" / ("a" * 40)
  from ardm_jax import hub as hub_lib

  assert hub_lib.local_folder("hf:me/digits") == str(snapshot)
  data = (snapshot / "model.safetensors").read_bytes()
  (snapshot / "model.safetensors").write_bytes(data[:-8] + b"\1" * 8)
  expect_error(
    capsys,
    "sample",
    "--model",
    "hf:me/digits",
    *jobs["sample"],
    match=f"{snapshot / 'model.safetensors'} is damaged or truncated: its SHA-256 differs",
  )
