"""Write a trained run (Toto 1.0 or 2.0) as a bundled model: its reference layout with float16 weights.

Bundled models must stay small inside the package (<= 20 MB each); float16 storage halves the float32
size, and ``toto_jax.load`` casts the weights back to float32 (as do the references' ``load_state_dict``).
The config's ``max_context`` becomes the context the run trained on, which every tool then forecasts from
by default. Usage::

    python -m toto_jax.eval.ship runs/pretrain_small toto_jax/assets/toto1_small
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def ship(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = True) -> dict:
    """Export the latest checkpoint of ``run_dir`` to ``out_dir``; returns size and the largest weight
    error the float16 rounding introduced (relative to each tensor's largest magnitude)."""
    from safetensors.numpy import load_file, save_file

    import toto_jax
    from toto_jax.checkpoint.torch_format import CONFIG_FILE, WEIGHTS_FILE
    from toto_jax.train.checkpointing import is_run_directory

    model = toto_jax.load(Path(run_dir).resolve())
    out_dir = toto_jax.export_torch(model, out_dir, overwrite=overwrite)
    if is_run_directory(run_dir):  # both references ignore this project's key
        config = json.loads((out_dir / CONFIG_FILE).read_text())
        config["max_context"] = model.config.max_context  # the context it trained on
        (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    weights = out_dir / WEIGHTS_FILE
    tensors = load_file(str(weights))
    if max(float(np.abs(t).max()) for t in tensors.values()) >= np.finfo(np.float16).max:
        raise ValueError("a weight exceeds the float16 range; ship float32 instead")
    half = {name: t.astype(np.float16) for name, t in tensors.items()}
    error = max(float(np.abs(half[n].astype(np.float32) - t).max() / max(np.abs(t).max(), 1e-30))
                for n, t in tensors.items())  # fmt: skip
    save_file(half, str(weights), metadata={"format": "pt"})
    return {"bytes": weights.stat().st_size, "max_relative_rounding": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toto_jax.eval.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(ship(args.run_dir, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
