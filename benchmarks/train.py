"""Train-step speed of toto-jax vs the reference (toto-ts 0.2.0, PyTorch) on the same CPU.

    python benchmarks/train.py [--config experiments/configs/small.yaml] [--batch 8] [--steps 10]

Both sides run the same model config on the same batch: the reference's fine-tuning step
(``TotoForFinetuning`` loss, ``backward``, ``AdamW.step``) and this project's jitted train step (one
device). Prints the median step times, their ratio, samples/s, the model-flops utilisation against
the measured float32 matmul peak of this machine, and the compile time of the Toto-Open-Base (151M)
step at a small batch. On a shared machine absolute times vary with load; the ratio is measured in one
run with both sides interleaved.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
import warnings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))  # reference helpers

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from toto_jax.data import make_iterator  # noqa: E402
from toto_jax.sharding import make_mesh  # noqa: E402
from toto_jax.train.config import load_config  # noqa: E402
from toto_jax.train.trainer import TrainProgram, measure_matmul_peak, training_flops_per_step  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def reference_step_fn(config, batch):

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from toto.model.lightning_module import TotoForFinetuning
        from toto.model.toto import Toto as ReferenceToto

        reference = ReferenceToto(**config.model.to_reference_dict() | {"dropout": config.model.dropout})
    module = TotoForFinetuning(pretrained_backbone=reference.model).train()
    module.log = lambda *args, **kwargs: None
    optimizer = module.configure_optimizers()["optimizer"]
    from reference import reference_training_batch

    inputs = reference_training_batch(batch, config.model.patch_size)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = module._train_or_val_step(inputs, is_train=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/small.yaml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side")
    parser.add_argument("--skip-base-compile", action="store_true")
    args = parser.parse_args()

    config = load_config(args.config, [f"data.batch_size={args.batch}", "mesh.shape=[1,1,1]"])
    batch = next(make_iterator(config.data))
    print(f"config {args.config}: batch {args.batch} x {config.data.num_variates} variates x "
          f"{config.data.context_length} steps, {jax.devices()[0].platform} x {jax.device_count()}")  # fmt: skip

    program = TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    state = program.init(config.seed)
    device_batch = program.put_batch(batch)
    start = time.perf_counter()
    state, metrics = program.step(state, device_batch)
    jax.block_until_ready(metrics)
    ours_first = time.perf_counter() - start
    reference = reference_step_fn(config, batch)
    reference()  # warm-up

    ours_times, reference_times = [], []
    for _ in range(args.steps):  # interleaved, so load changes hit both sides alike
        start = time.perf_counter()
        state, metrics = program.step(state, device_batch)
        jax.block_until_ready(metrics)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference()
        reference_times.append(time.perf_counter() - start)
    ours, ref = statistics.median(ours_times), statistics.median(reference_times)

    peak = measure_matmul_peak(jnp.float32)
    flops = training_flops_per_step(config.model, args.batch, config.data.num_variates, config.data.context_length)
    print(f"toto-jax step   {ours * 1e3:9.1f} ms  ({args.batch / ours:8.1f} samples/s, MFU {flops / ours / peak:.1%}), "
          f"first call incl. compile {ours_first:.1f} s")  # fmt: skip
    print(f"reference step  {ref * 1e3:9.1f} ms  ({args.batch / ref:8.1f} samples/s, MFU {flops / ref / peak:.1%})")
    print(f"speed-up        {ref / ours:9.2f}x (target >= 1.5x)")
    print(f"matmul peak     {peak / 1e9:9.1f} GFLOP/s (float32, measured); model flops/step {flops / 1e9:.2f} G")

    if not args.skip_base_compile:
        base = load_config(
            ROOT / "experiments/configs/toto_base.yaml",
            ["data.batch_size=1", "data.num_variates=2", "data.context_length=512", "mesh.shape=[1,1,1]",
             "data.num_workers=0", "data.sources=[{type: synthetic}]"],
        )  # fmt: skip
        base_program = TrainProgram(base, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
        base_batch = base_program.put_batch(next(make_iterator(base.data)))
        start = time.perf_counter()
        lowered = base_program.step.lower(base_program.abstract_state, base_batch)
        traced = time.perf_counter() - start
        lowered.compile()
        total = time.perf_counter() - start
        print(f"151M step (bf16, remat, 12 layers) compile {total:.1f} s (trace {traced:.1f} s) "
              f"at batch 1 x 2 variates x 512 steps")  # fmt: skip


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
