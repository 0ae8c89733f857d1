"""Train-step speed of toto-jax vs the reference (toto-ts 0.2.0, PyTorch) on the same device.

    python benchmarks/train.py [--config experiments/configs/small.yaml] [--batch 8] [--steps 10] [--skip-base]
                               [--dtypes float32,bfloat16] [--toto2 experiments/configs/toto2_small.yaml]
    JAX_PLATFORMS=cuda python benchmarks/train.py ...   # both sides on the first GPU

Both sides run the same model config on the same batch: the reference's fine-tuning step
(``TotoForFinetuning`` loss, ``backward``, ``AdamW.step``) and this project's jitted train step (one
device). Prints the median step times, their ratio, samples/s and the model-flops utilisation against
the measured matmul peak of the device (on CPU float32, on an accelerator bfloat16), for the given config
and for the Toto-Open-Base architecture at batch 4 x 8 variates x 1024 steps (no remat, as the reference
runs), then the compile time of the Toto-Open-Base training step (bfloat16, remat) at a small batch.
``--dtypes`` lists the compute dtypes to race: float32 (the reference's own; on a GPU both sides multiply
float32 in TF32, JAX's default there and torch's "high" matmul precision), bfloat16 (float32 master weights;
the reference under ``torch.autocast``). JAX_PLATFORMS picks the device and the reference follows it (CUDA
when JAX runs on a GPU). Both sides are interleaved in one run; the load average is printed before and
after, and a ratio measured above the core count is flagged as not a result. ``--toto2 CONFIG`` also times
a Toto 2.0 config's step (toto-jax only: toto-2 ships no training step) with its own optimiser and masking.
Each side's minor page faults per step are printed too: glibc serves the step's temporaries (XLA's 205 MB
buffer at small.yaml) from fresh mmap'd 4 KB pages on every step, about 50,000 faults and a quarter of the CPU
time in the kernel; ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` backs them with transparent huge pages, for both
sides of this process alike (the figures in benchmarks/README.md say which they used).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
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

import machine_load  # noqa: E402  benchmarks/, this script's own directory
from devices import reference_device  # noqa: E402

from toto_jax.data import make_iterator  # noqa: E402
from toto_jax.sharding import make_mesh  # noqa: E402
from toto_jax.train.config import load_config  # noqa: E402
from toto_jax.train.trainer import (  # noqa: E402
    TrainProgram,
    measure_matmul_peak,
    toto2_training_flops_per_step,
    training_flops_per_step,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def reference_step_fn(config, batch):
    import torch

    device = reference_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from toto.model.lightning_module import TotoForFinetuning
        from toto.model.toto import Toto as ReferenceToto

        reference = ReferenceToto(**config.model.to_reference_dict() | {"dropout": config.model.dropout})
    module = TotoForFinetuning(pretrained_backbone=reference.model).train().to(device)
    module.log = lambda *args, **kwargs: None
    optimizer = module.configure_optimizers()["optimizer"]
    from reference import reference_training_batch

    inputs = reference_training_batch(batch, config.model.patch_size).to(device)
    # bfloat16 compute with float32 weights, as this project's model.dtype=bfloat16
    half = config.model.dtype == "bfloat16"
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=half)
    # bfloat16 mixture weights miss the simplex check's tolerance (sums of 1 +- 4e-3); the loss is unchanged
    torch.distributions.Distribution.set_default_validate_args(not half)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = module._train_or_val_step(inputs, is_train=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the device

    return step


def compare(config, batch_size: int, steps: int, peak: float) -> None:
    """Interleaved step times of both sides on one batch of ``config``'s data; prints times, ratio and MFU."""
    batch = next(make_iterator(config.data))
    data = config.data
    print(f"batch {batch_size} x {data.num_variates} variates x {data.context_length} steps, "
          f"{config.model.num_layers} layers x {config.model.embed_dim} wide, {config.model.dtype}, "
          f"{jax.devices()[0].platform} x {jax.device_count()}")  # fmt: skip
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
    faults = {"ours": 0, "reference": 0}

    def timed(side, run):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        faults[side] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return elapsed

    def run_ours():
        nonlocal state
        state, metrics = program.step(state, device_batch)
        jax.block_until_ready(metrics)

    for _ in range(steps):  # interleaved, so load changes hit both sides alike
        ours_times.append(timed("ours", run_ours))
        reference_times.append(timed("reference", reference))
    ours, ref = statistics.median(ours_times), statistics.median(reference_times)
    flops = training_flops_per_step(config.model, batch_size, data.num_variates, data.context_length)
    print(f"  toto-jax step   {ours * 1e3:9.1f} ms  ({batch_size / ours:8.1f} samples/s, MFU {flops / ours / peak:.1%}), "
          f"first call incl. compile {ours_first:.1f} s")  # fmt: skip
    print(f"  reference step  {ref * 1e3:9.1f} ms  ({batch_size / ref:8.1f} samples/s, MFU {flops / ref / peak:.1%})")
    print(f"  speed-up        {ref / ours:9.2f}x (target >= 1.5x); model flops/step {flops / 1e9:.2f} G")
    print(f"  page faults/step: toto-jax {faults['ours'] // steps}, reference {faults['reference'] // steps} "
          f"(GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r})")


def time_toto2(config, steps: int, peak: float) -> None:
    """Median step time, samples/s and MFU of a Toto 2.0 config's jitted train step (one device)."""
    data, model = config.data, config.model
    print(f"Toto 2.0: batch {data.batch_size} x {data.num_variates} variates x {data.context_length} + "
          f"{model.patch_size} steps, {model.num_layers} layers x {model.d_model} wide, {model.dtype}, "
          f"optimizer {config.optimizer.resolved_name(model.family)}")  # fmt: skip
    program = TrainProgram(config, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    state = program.init(config.seed)
    batch = program.put_batch(next(make_iterator(data)))
    start = time.perf_counter()
    state, metrics = program.step(state, batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = program.step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    flops = toto2_training_flops_per_step(model, data.batch_size, data.num_variates,
                                          data.context_length + model.patch_size)  # fmt: skip
    print(f"  toto-jax step   {step * 1e3:9.1f} ms  ({data.batch_size / step:8.1f} samples/s, "
          f"MFU {flops / step / peak:.1%}), first call incl. compile {first:.1f} s; "
          f"model flops/step {flops / 1e9:.2f} G")  # fmt: skip


def device_peak() -> tuple[float, str]:
    """The roof MFU is read against: float32 on CPU (what the reference runs there), bfloat16 elsewhere."""
    if jax.default_backend() == "cpu":
        return measure_matmul_peak(jnp.float32), "float32"
    return measure_matmul_peak(jnp.bfloat16, size=8192, repeats=10), "bfloat16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/small.yaml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side")
    parser.add_argument("--base-batch", type=int, default=4, help="series per batch at the Toto-Open-Base shape")
    parser.add_argument("--base-steps", type=int, default=3, help="timed steps per side at the Toto-Open-Base shape")
    parser.add_argument("--skip-base", action="store_true", help="skip the Toto-Open-Base shape and its compile time")
    parser.add_argument("--toto2", metavar="CONFIG", help="also time this Toto 2.0 training config")
    parser.add_argument("--dtypes", default="float32", help="compute dtypes to race, comma-separated")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    if not set(dtypes) <= {"float32", "bfloat16"}:
        parser.error(f"--dtypes {args.dtypes!r}: each must be float32 or bfloat16")

    load_before = machine_load.load_average()
    peak, peak_dtype = device_peak()
    print(f"{jax.devices()[0].device_kind}: matmul peak {peak / 1e12:.3f} TFLOP/s ({peak_dtype}, measured); "
          f"MFU is model flops / step time / peak")  # fmt: skip
    base_file = ROOT / "experiments/configs/toto_base.yaml"
    synthetic = ["mesh.shape=[1,1,1]", "data.num_workers=0", "data.sources=[{type: synthetic}]"]
    for dtype in dtypes:
        config = load_config(args.config, [f"data.batch_size={args.batch}", "mesh.shape=[1,1,1]",
                                           f"model.dtype={dtype}"])  # fmt: skip
        print(f"{args.config}:")
        compare(config, args.batch, args.steps, peak)
        if not args.skip_base:
            # no remat, as the reference's step runs
            base = load_config(base_file, synthetic + [f"data.batch_size={args.base_batch}", "data.num_variates=8",
                                                       "data.context_length=1024", f"model.dtype={dtype}",
                                                       "model.remat=false"])  # fmt: skip
            print("Toto-Open-Base (151M) architecture:")
            compare(base, args.base_batch, args.base_steps, peak)

    if not args.skip_base:
        compile_config = load_config(
            base_file, synthetic + ["data.batch_size=1", "data.num_variates=2", "data.context_length=512"]
        )
        base_program = TrainProgram(compile_config, make_mesh((1, 1, 1), devices=jax.devices()[:1]))
        base_batch = base_program.put_batch(next(make_iterator(compile_config.data)))
        start = time.perf_counter()
        lowered = base_program.step.lower(base_program.abstract_state, base_batch)
        traced = time.perf_counter() - start
        lowered.compile()
        total = time.perf_counter() - start
        print(f"151M step (bf16, remat, 12 layers) compile {total:.1f} s (trace {traced:.1f} s) "
              f"at batch 1 x 2 variates x 512 steps (target <= 60 s)")  # fmt: skip

    if args.toto2:
        time_toto2(load_config(args.toto2, ["mesh.shape=[1,1,1]", "data.num_workers=0"]), args.steps, peak)

    machine_load.report(load_before)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
