"""`ardm decompress`: the files of an `ardm compress` container, with the model that wrote it."""

from __future__ import annotations

import os

from ardm_jax.coding import checks, packing
from ardm_jax.coding_items import MAX_DECODE_SYMBOLS
from ardm_jax.coding_model import coding_devices, coding_model_for
from ardm_jax.compress import decompress_file
from ardm_jax.jobs import model_source, options
from ardm_jax.model_dir import trained_spec


def add_parser(sub) -> None:
  p = sub.add_parser("decompress", description="restore the files of an `ardm compress` container")
  options.add_model_source(p)  # the model that compressed the file: its workdir or its exported folder
  options.add_step(p)
  p.add_argument("input", metavar="IN", help="the container file")
  options.add_out(p, "output folder (created if missing)", required=True, short=True)
  p.add_argument("--policy", default=None, help="policy file used for compression (default WORKDIR/policy.json)")
  options.add_overwrite(p, "replace existing output files")


def run(args) -> None:
  model_source.enable_compile_cache(args.workdir)
  if not os.path.isfile(args.input):
    raise ValueError(f"input file {args.input} does not exist")
  with open(args.input, "rb") as f:
    data = f.read()
  options.resolve_model(args)
  spec = trained_spec(args.workdir, args.model)
  # A damaged file or a non-container fails here, before the model is loaded (parsing only: any stage count).
  packing.unpack_container(
    data,
    expected_fingerprint=None,
    expected_shape=spec.shape,
    max_symbols=MAX_DECODE_SYMBOLS,
    num_stages=checks.MAX_STAGES,
  )
  cm = coding_model_for(model_source.open_model(args, devices=coding_devices()))
  paths, s = decompress_file(cm, data, args.out, policy_file=args.policy, overwrite=args.overwrite)
  print(
    f"{args.input}: {s.num_items} item(s), mode {s.mode}, {s.policy_steps} policy steps, "
    f"{s.network_calls} network calls, {s.seconds:.2f}s -> {len(paths)} file(s) in {args.out}"
  )
