"""Toto 2.0 forecast latency of toto-jax against toto-2 2.0.0, same CPU, same (random) weights.

    python benchmarks/forecast_toto2.py [--shapes small,300m] [--repeats 3] [--reference-repeats 2]

The latency setting of the Toto 2.0 model cards: single-pass forecasts of 1024 steps at batch 8 (one
variate each), here from a 2048-step context. Two shapes with random weights: ``small`` (d_model 256,
8 layers, ~10M parameters) and ``300m`` (d_model 1024, 24 layers, ~310M, close to the published 313m).
The published configs are not reproduced exactly (their config.json files are not at hand); the
architecture's switches are set as toto-2's defaults with grouped-query attention. Each side runs in its
own subprocess on the same checkpoint (peak memory per side): toto-2 through ``Toto2Model.forecast``, this
project through ``toto_jax.forecast`` with ``ForecastOptions.reference()``. Prints the load average before
and after; a ratio measured above the core count is not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forecast import peak_rss_mib, timed  # noqa: E402
import machine_load  # noqa: E402

BATCH, CONTEXT, HORIZON = 8, 2048, 1024
SHAPES = {
    "small": dict(patch_size=32, d_model=256, num_heads=8, num_groups=4, num_layers=8, layer_group_size=4,
                  num_variate_layers_per_group=1, variate_layer_first=False),
    "300m": dict(patch_size=32, d_model=1024, num_heads=16, num_groups=4, num_layers=24, layer_group_size=4,
                 num_variate_layers_per_group=1, variate_layer_first=False),
}  # fmt: skip


def make_checkpoint(directory: Path, shape: str, seed: int = 0) -> None:
    import warnings

    import safetensors.torch
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from toto2 import Toto2Model, Toto2ModelConfig

        config = dict(SHAPES[shape], residual_attn_ratio=Toto2ModelConfig.compute_residual_attn_ratio(CONTEXT, 32))
        torch.manual_seed(seed)
        model = Toto2Model(Toto2ModelConfig(**config))
    safetensors.torch.save_file(model.state_dict(), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))


def inputs(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(CONTEXT)
    level = rng.uniform(-10, 10, (BATCH, 1, 1))
    return (level + 3 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.5, (BATCH, 1, CONTEXT))).astype(np.float32)


def run_jax(checkpoint: Path, repeats: int) -> dict:
    import numpy as np

    import toto_jax

    model = toto_jax.load(checkpoint)
    series = inputs()
    base = peak_rss_mib()
    result = {}

    def call():
        result["forecast"] = toto_jax.forecast(model, series, HORIZON, options=toto_jax.ForecastOptions.reference())

    out = timed(call, repeats)
    assert np.all(np.isfinite(result["forecast"].quantiles))
    return out | {"peak_rss_mib": peak_rss_mib(), "rss_before_mib": base}


def run_reference(checkpoint: Path, repeats: int) -> dict:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from toto2 import Toto2Model

        model = Toto2Model.from_pretrained(str(checkpoint))
    series = torch.tensor(inputs())
    batch = {"target": series, "target_mask": torch.ones_like(series, dtype=torch.bool),
             "series_ids": torch.zeros(series.shape[:2], dtype=torch.long)}  # fmt: skip
    base = peak_rss_mib()

    def call():
        with torch.inference_mode():
            model.forecast(batch, HORIZON)

    out = timed(call, repeats)
    return out | {"peak_rss_mib": peak_rss_mib(), "rss_before_mib": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="small,300m")
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats of toto-jax")
    parser.add_argument("--reference-repeats", type=int, default=2, help="warm repeats of toto-2")
    parser.add_argument("--side", choices=("jax", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:
        run = run_jax if args.side == "jax" else run_reference
        repeats = args.repeats if args.side == "jax" else args.reference_repeats
        print(json.dumps(run(args.checkpoint, repeats)))
        return

    load_before = machine_load.load_average()
    print(f"load average before {load_before:.2f} ({os.cpu_count()} cores)")
    print(f"Toto 2.0, random weights, batch {BATCH} x 1 variate, context {CONTEXT}, horizon {HORIZON} in one pass, "
          f"CPU ({os.cpu_count()} cores)")  # fmt: skip
    print(f"{'shape':<8}{'toto-2 s':>10}{'toto-jax s':>12}{'jax compile s':>15}{'speed-up':>10}"
          f"{'toto-2 MiB':>12}{'toto-jax MiB':>14}")  # fmt: skip
    for shape in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = Path(directory)
            make_checkpoint(checkpoint, shape)
            results = {}
            for side in ("reference", "jax"):
                command = [sys.executable, __file__, "--side", side, "--checkpoint", str(checkpoint),
                           "--repeats", str(args.repeats), "--reference-repeats", str(args.reference_repeats)]  # fmt: skip
                env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
                completed = subprocess.run(command, capture_output=True, text=True, env=env)
                if completed.returncode:
                    sys.exit(f"{side} side failed:\n{completed.stderr}")
                results[side] = json.loads(completed.stdout.strip().splitlines()[-1])
        reference, jax_side = results["reference"], results["jax"]
        print(f"{shape:<8}{reference['warm_s']:>10.3f}{jax_side['warm_s']:>12.3f}{jax_side['compile_s']:>15.2f}"
              f"{reference['warm_s'] / jax_side['warm_s']:>9.1f}x{reference['peak_rss_mib']:>12.0f}"
              f"{jax_side['peak_rss_mib']:>14.0f}", flush=True)  # fmt: skip
    machine_load.report(load_before)


if __name__ == "__main__":
    main()
