"""Toto 2.0 configuration: the fields of toto-2's ``Toto2ModelConfig``, read from a published ``config.json``.

Optional fields stay ``None`` as written in the file (so an exported config.json equals the one loaded);
the resolved values are properties (``ff_dim``, ``head_dim``, ``kv_heads``, ...), with the reference's rules.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ...config import _HUB_METADATA_KEYS, ConfigError, read_config_json

QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class Toto2Config:
    patch_size: int
    d_model: int
    num_heads: int
    num_layers: int
    layer_group_size: int
    num_variate_layers_per_group: int
    variate_layer_first: bool
    residual_attn_ratio: float
    dropout_p: float = 0.0
    norm_eps: float = 5e-5
    attn_bias: bool = False
    mlp_bias: bool = False
    num_output_patches: int = 1
    pre_norm: bool = True
    d_ff: int | None = None
    qk_dim: int | None = None
    v_dim: int | None = None
    num_groups: int | None = None
    heads_per_group: int | None = None
    residual_mult: float = 1.0
    qk_norm: bool = True
    norm_include_weight: bool = False
    qk_norm_include_weight: bool | None = None
    per_dim_scale: bool = False
    use_xpos: bool = False
    # This project's keys, which may ride along in an exported config.json.
    max_context: int = 4096  # forecasting keeps the most recent part of longer contexts
    dtype: str = "float32"  # computation dtype; parameters are always float32

    family = "toto2"

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        need(self.dropout_p == 0.0, f"dropout_p must be 0 for Toto 2.0 (got {self.dropout_p})")
        need(self.pre_norm, "pre_norm=False is not supported: Toto 2.0 layers are pre-norm")
        need(self.num_heads > 0 and self.d_model % self.num_heads == 0,
             f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")  # fmt: skip
        need(self.num_layers % self.layer_group_size == 0,
             f"num_layers ({self.num_layers}) must be divisible by layer_group_size ({self.layer_group_size})")  # fmt: skip
        need(0 <= self.num_variate_layers_per_group <= self.layer_group_size,
             f"num_variate_layers_per_group ({self.num_variate_layers_per_group}) must lie in "
             f"[0, layer_group_size={self.layer_group_size}]")  # fmt: skip
        need(self.num_heads % self.kv_heads == 0,
             f"num_heads ({self.num_heads}) must be a multiple of num_groups ({self.kv_heads})")  # fmt: skip
        need(self.heads_per_group in (None, self.num_heads // self.kv_heads),
             f"heads_per_group ({self.heads_per_group}) must equal num_heads // num_groups "
             f"({self.num_heads // self.kv_heads})")  # fmt: skip
        need(self.head_dim % 4 == 0, f"qk_dim ({self.head_dim}) must be a multiple of 4 (rotary on its first half)")
        need(self.num_output_patches >= 1, f"num_output_patches must be >= 1, got {self.num_output_patches}")

    # ---- resolved values (the reference fills these in __post_init__) ------------------------------
    @property
    def ff_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else (int(4 * self.d_model * 2 / 3) + 7) // 8 * 8

    @property
    def head_dim(self) -> int:
        return self.qk_dim or self.d_model // self.num_heads

    @property
    def value_dim(self) -> int:
        return self.v_dim or self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.num_groups or self.num_heads

    @property
    def qk_norm_weight(self) -> bool:
        return self.norm_include_weight if self.qk_norm_include_weight is None else self.qk_norm_include_weight

    @property
    def num_quantiles(self) -> int:
        return len(QUANTILE_LEVELS)

    def replace(self, **changes: Any) -> "Toto2Config":
        return dataclasses.replace(self, **changes)

    @staticmethod
    def residual_attn_ratio_for(context_length: int, patch_size: int) -> float:
        """The reference's rule sqrt(S / log S), S = context patches."""
        s = context_length / patch_size
        return math.sqrt(s / math.log(s))

    # ---- config.json ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_reference_dict(self) -> dict[str, Any]:
        """The fields toto-2's ``Toto2ModelConfig`` takes (this project's own keys left out)."""
        values = self.to_dict()
        for key in ("max_context", "dtype"):
            values.pop(key)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Toto2Config":
        values = {k: v for k, v in values.items() if k not in _HUB_METADATA_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown Toto 2.0 config key(s) {unknown}; known keys: {sorted(known)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in values]
        if missing:
            raise ConfigError(f"Toto 2.0 config lacks required key(s) {missing}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> "Toto2Config":
        return cls.from_dict(read_config_json(path))


def is_toto2_config(values: dict[str, Any]) -> bool:
    """Toto 2.0 configs are told from Toto 1.0 ones by their layer-group keys."""
    return "layer_group_size" in values or "d_model" in values
