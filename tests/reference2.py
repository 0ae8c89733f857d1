"""Helpers around the Toto 2.0 reference (toto-2==2.0.0 with dd-unit-scaling) for parity tests: random models,
every tensor perturbed so that each one matters, saved as published checkpoints (config.json + safetensors)."""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    from reference import save_reference  # noqa: F401  (the same state_dict + config.json layout for toto-2)
    from toto2 import Toto2Model, Toto2ModelConfig

# Small shapes covering the architecture's switches (the six configurations and more).
CONFIGS = {
    "gqa_variate_last": dict(num_groups=2, variate_layer_first=False, layer_group_size=2),
    "mha_variate_first": dict(num_groups=None, variate_layer_first=True, layer_group_size=2),
    "group3_xpos_weights": dict(num_groups=2, layer_group_size=3, num_layers=6, use_xpos=True, norm_include_weight=True),
    "group4_two_variate": dict(layer_group_size=4, num_variate_layers_per_group=2, use_xpos=True, num_groups=1),
    "per_dim_scale_bias": dict(per_dim_scale=True, attn_bias=True, mlp_bias=True, qk_norm_include_weight=True),
    "no_qk_norm": dict(qk_norm=False, num_groups=4, residual_mult=0.7),
}


def config_dict(**overrides) -> dict:
    values = dict(
        patch_size=8, d_model=32, num_heads=4, num_layers=4, layer_group_size=2, num_variate_layers_per_group=1,
        variate_layer_first=False, residual_attn_ratio=1.4,
    )  # fmt: skip
    values.update(overrides)
    return values


def make_reference(config: dict, seed: int = 0, head_gain: float = 1.0) -> Toto2Model:
    """Weights N(0, 1) as u-muP initialises them; norms, per-dimension scales and taus perturbed around theirs.

    ``head_gain`` < 1 shrinks the quantile head: block decoding feeds medians back, and with a random head
    float32 rounding grows block by block (toto-2 in float32 and in float64 differ by 1e-2 after five
    blocks), so decoding parity is checked on a model whose feedback does not amplify."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Toto2Model(Toto2ModelConfig(**config))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("norm.weight") or name.endswith(("norm1.weight", "norm2.weight")):
                tensor.copy_(1.0 + 0.2 * torch.randn_like(tensor))
            elif name.endswith("per_dim_scale"):
                tensor.copy_(0.5 * torch.randn_like(tensor))
            elif name.endswith("_tau"):
                tensor.mul_(1.0 + 0.1 * torch.randn(()))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            if name.startswith("output_head.") and name.endswith(("linear2.weight", "skip_proj.weight")):
                tensor.mul_(head_gain)
    return model.eval()


def reference_forward(model: Toto2Model, series, mask, series_ids):
    """Quantiles [9, batch, variate, patches, patch] (scaled space), loc, scale as numpy."""
    series = torch.as_tensor(np.asarray(series, np.float32))
    mask = torch.as_tensor(np.asarray(mask, bool))
    with torch.no_grad():
        out = model(series, mask, torch.ones_like(mask), torch.as_tensor(np.asarray(series_ids, np.int64)))
    return out.quantiles.numpy(), out.loc.numpy(), out.scale.numpy()


def reference_forecast(model: Toto2Model, series, mask, series_ids, horizon, **kwargs):
    inputs = {
        "target": torch.as_tensor(np.asarray(series, np.float32)),
        "target_mask": torch.as_tensor(np.asarray(mask, bool)),
        "series_ids": torch.as_tensor(np.asarray(series_ids, np.int64)),
    }
    for key in ("known_dynamic", "known_dynamic_mask", "known_dynamic_series_ids"):
        if key in kwargs:
            inputs[key] = torch.as_tensor(np.asarray(kwargs.pop(key)))
    with torch.no_grad():
        return model.forecast(inputs, horizon, **kwargs).numpy()


def per_variate_relative_error(actual, expected) -> float:
    """The worst ``relative_error`` over series and variates (axes -3, -2 of [..., batch, variate, time]):
    each variate judged on its own scale, so a large-valued variate cannot hide a small one."""
    from reference import relative_error

    actual, expected = np.asarray(actual), np.asarray(expected)
    return max(
        relative_error(actual[..., b, v, :], expected[..., b, v, :])
        for b in range(expected.shape[-3])
        for v in range(expected.shape[-2])
    )
