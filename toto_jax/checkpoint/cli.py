"""``toto-jax convert SRC DST``: between the native and the PyTorch (reference) checkpoint layouts."""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np

_LAYER = re.compile(r"^transformer\.layers\.(\d+)\.")


def tensor_group(key: str) -> str:
    """The group a torch-layout key belongs to: one per layer, one per top-level module."""
    name = key.removeprefix("model.")
    layer = _LAYER.match(name)
    if layer:
        return f"transformer.layers.{int(layer.group(1)):02d}"
    if name.endswith("variate_label"):
        return "variate_labels"
    return name.split(".", 1)[0]


def tensor_group_checksums(model) -> dict[str, tuple[int, str]]:
    """{group: (parameter count, sha256 prefix)} over the reference-layout float32 tensors.

    Computed on the torch layout, so a model has the same checksums whichever format it was read from.
    """
    from .torch_format import torch_tensors

    tensors = torch_tensors(model)
    groups: dict[str, list[str]] = {}
    for key in tensors:  # model order: embedding, head, labels, then layers
        groups.setdefault(tensor_group(key), []).append(key)
    checksums = {}
    for group, keys in sorted(groups.items(), key=lambda item: item[0].startswith("transformer")):
        digest = hashlib.sha256()
        count = 0
        for key in sorted(keys):
            array = np.require(tensors[key], np.float32, "C")  # (a 0-d tau keeps its shape ())
            digest.update(f"{key}:{array.shape}".encode())
            digest.update(array.tobytes())
            count += array.size
        checksums[group] = (count, digest.hexdigest()[:16])
    return checksums


def convert(source: str | Path, destination: str | Path, *, to: str | None = None, overwrite: bool = False):
    """Convert a checkpoint; returns (source kind, target kind, checksums of the written, re-read model)."""
    from . import CheckpointError, checkpoint_kind, export_torch, load, locate, save
    from .files import check_destination

    source = locate(source)
    kind = checkpoint_kind(source)
    if kind is None:
        if not source.exists():
            raise CheckpointError(f"source not found: {source}")
        raise CheckpointError(
            f"{source} is neither a PyTorch checkpoint (model.safetensors), a native checkpoint nor a training run"
        )
    if to is None:
        if kind == "run":
            raise CheckpointError("--to {native,torch} is required when the source is a training run directory")
        to = "native" if kind == "torch" else "torch"
    # Refuse early, before the (possibly long) read of the source.
    check_destination(destination, overwrite=overwrite)
    model = load(source)
    expected = tensor_group_checksums(model)
    if to == "native":
        save(model, destination, overwrite=overwrite)
    else:
        export_torch(model, destination, overwrite=overwrite)
    written = tensor_group_checksums(load(destination))
    differing = [group for group in expected if written.get(group) != expected[group]]
    if differing or set(written) != set(expected):
        raise CheckpointError(f"{destination} re-reads with different tensors in groups {differing}")
    return kind, to, written


def run(args: argparse.Namespace) -> int:
    kind, to, checksums = convert(args.source, args.destination, to=args.to, overwrite=args.overwrite)
    total = sum(count for count, _ in checksums.values())
    print(f"converted {kind} checkpoint {args.source} -> {to} checkpoint {args.destination}")
    print(f"{'tensor group':<28} {'parameters':>12}  sha256 (reference layout, float32)")
    for group, (count, digest) in checksums.items():
        print(f"{group:<28} {count:>12,}  {digest}")
    print(f"{'total':<28} {total:>12,}  (verified: the destination re-reads with these checksums)")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between the native and the PyTorch (reference) layouts",
        description=(
            "Convert SRC (a PyTorch model.safetensors + config.json directory, a native checkpoint, a "
            "training run directory or a Hugging Face Hub model, hf://OWNER/NAME) into DST; both may be gs:// or "
            "s3:// URLs. Without --to, PyTorch becomes native and native becomes "
            "PyTorch. Prints the parameter count and a checksum per tensor group of the written checkpoint."
        ),
    )
    parser.add_argument("source", metavar="SRC",
                        help="checkpoint to read: a reference (torch) or native checkpoint directory, a training run "
                             "directory, hf://OWNER/NAME[@REVISION], gs:// or s3://")  # fmt: skip
    parser.add_argument("destination", metavar="DST",
                        help="directory to write (local, gs:// or s3://; not hf://: upload a torch export with "
                             "`hf upload`)")  # fmt: skip
    parser.add_argument("--to", choices=("native", "torch"), default=None,
                        help="layout to write (default: the other layout than SRC's; required for a run directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it is a non-empty directory")
    parser.set_defaults(func=run)
