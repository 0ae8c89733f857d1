"""Helpers around the PyTorch reference (toto-ts==0.2.0) for parity tests: random models saved as checkpoints."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import safetensors.torch
    import torch
    from toto.model.toto import Toto as ReferenceToto

SCALERS = {
    "std_mean": "<class 'model.scaler.StdMeanScaler'>",
    "causal_std_mean": "<class 'model.scaler.CausalStdMeanScaler'>",
    "causal_patch_std_mean": "<class 'model.scaler.CausalPatchStdMeanScaler'>",
}
MIXTURE = "<class 'model.distribution.MixtureOfStudentTsOutput'>"
STUDENT_T = "<class 'model.distribution.StudentTOutput'>"


def reference_config(
    *,
    patch_size=8,
    stride=None,
    embed_dim=32,
    num_layers=4,
    num_heads=4,
    mlp_hidden_dim=48,
    spacewise_every_n_layers=2,
    spacewise_first=True,
    scaler="causal_patch_std_mean",
    k_components=3,  # None: single Student-T head
    stabilize_with_global=True,
    scale_factor_exponent=10.0,
) -> dict:
    """A config.json dict in the reference's own format."""
    return {
        "patch_size": patch_size,
        "stride": stride or patch_size,
        "embed_dim": embed_dim,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "mlp_hidden_dim": mlp_hidden_dim,
        "dropout": 0.0,
        "spacewise_every_n_layers": spacewise_every_n_layers,
        "spacewise_first": spacewise_first,
        "use_memory_efficient_attention": False,
        "scaler_cls": SCALERS[scaler],
        "output_distribution_classes": [STUDENT_T if k_components is None else MIXTURE],
        "output_distribution_kwargs": {} if k_components is None else {"k_components": k_components},
        "stabilize_with_global": stabilize_with_global,
        "scale_factor_exponent": scale_factor_exponent,
    }


def make_reference(config: dict, seed: int = 0, variate_labels: bool = False) -> ReferenceToto:
    """A reference model with random weights; norm scales are randomised too so they are exercised."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ReferenceToto(**config)
    if variate_labels:
        model.model.enable_variate_labels()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm1.scale") or name.endswith("norm2.scale"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    return model.eval()


def save_reference(model: ReferenceToto, config: dict, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(model.state_dict(), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def reference_forward(model: ReferenceToto, series, padding_mask, id_mask, prefix_length=None, num_exogenous=0):
    with torch.no_grad():
        return model.model(
            torch.as_tensor(np.asarray(series, np.float32)),
            torch.as_tensor(np.asarray(padding_mask, bool)),
            torch.as_tensor(np.asarray(id_mask, np.int64)),
            scaling_prefix_length=prefix_length,
            num_exogenous_variables=num_exogenous,
        )


def relative_error(actual, expected) -> float:
    """Elementwise relative error, elements under 1% of the largest judged against 1% of its magnitude."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    floor = max(1e-2 * float(np.max(np.abs(expected))), 1e-30)
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), floor)))


def reference_training_batch(batch: dict, patch_size: int):
    """A toto_jax training batch ({series, padding_mask, id_mask} [B, V, T + patch]) as the reference's
    ``CausalMaskedTimeseries``: input the first T steps, target shifted by one patch."""
    from toto.data.util.dataset import CausalMaskedTimeseries

    context = batch["series"].shape[-1] - patch_size
    return CausalMaskedTimeseries(
        series=torch.as_tensor(batch["series"]),
        padding_mask=torch.as_tensor(batch["padding_mask"]),
        id_mask=torch.as_tensor(batch["id_mask"], dtype=torch.int64),
        timestamp_seconds=torch.zeros(batch["series"].shape, dtype=torch.int64),
        time_interval_seconds=torch.ones(batch["series"].shape[:2], dtype=torch.int64),
        input_slice=slice(0, context),
        target_slice=slice(patch_size, context + patch_size),
    )
