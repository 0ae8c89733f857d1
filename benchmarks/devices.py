"""Where both sides of a benchmark run: JAX_PLATFORMS picks JAX's device (the scripts default it to cpu) and
the PyTorch reference follows it, so that a ratio compares the two on one device."""

from __future__ import annotations

import os


def on_gpu() -> bool:
    return os.environ.get("JAX_PLATFORMS", "cpu") in ("cuda", "gpu")


def reference_device():
    """CUDA when JAX runs on a GPU, with TF32 float32 matmuls as JAX's default there; else the CPU."""
    import torch

    if on_gpu():
        torch.set_float32_matmul_precision("high")
        return torch.device("cuda")
    return torch.device("cpu")
