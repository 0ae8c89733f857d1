"""Model configuration: one frozen dataclass, readable from the reference's ``config.json`` as it is."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

SCALERS = ("std_mean", "causal_std_mean", "causal_patch_std_mean")
DISTRIBUTIONS = ("student_t", "mixture_student_t")

# The reference stores classes as ``str(cls)`` strings in its config.json.
_REFERENCE_SCALER_NAMES = {
    "<class 'model.scaler.StdMeanScaler'>": "std_mean",
    "<class 'model.scaler.CausalStdMeanScaler'>": "causal_std_mean",
    "<class 'model.scaler.CausalPatchStdMeanScaler'>": "causal_patch_std_mean",
}
_REFERENCE_DISTRIBUTION_NAMES = {
    "<class 'model.distribution.StudentTOutput'>": "student_t",
    "<class 'model.distribution.MixtureOfStudentTsOutput'>": "mixture_student_t",
}
# Keys the reference accepts that change nothing numerically here (kernel choice, checkpoint flavour).
_REFERENCE_IGNORED_KEYS = ("use_memory_efficient_attention", "pre_xformers_checkpoint")
# Metadata that Hugging Face tooling may add to a config.json.
_HUB_METADATA_KEYS = ("_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype")


class ConfigError(ValueError):
    """A configuration value or key that this project does not understand."""


@dataclasses.dataclass(frozen=True)
class TotoConfig:
    patch_size: int = 64
    stride: int = 64
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072
    dropout: float = 0.1
    spacewise_every_n_layers: int = 12  # -1: time-wise layers only
    spacewise_first: bool = True
    scaler: str = "causal_patch_std_mean"
    distribution: str = "mixture_student_t"
    k_components: int = 24  # ignored for the single Student-T head
    stabilize_with_global: bool = True
    scale_factor_exponent: float = 10.0
    variate_labels: bool = False  # the reference's ``enable_variate_labels`` (exogenous variables)
    max_context: int = 4096  # forecasting keeps the most recent part of longer contexts
    dtype: str = "float32"  # computation dtype; parameters are always float32
    remat: bool = False  # rematerialise each scanned layer stage in the backward pass

    family = "toto1"

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        need(self.scaler in SCALERS, f"unknown scaler {self.scaler!r}; expected one of {SCALERS}")
        need(
            self.distribution in DISTRIBUTIONS,
            f"unknown distribution {self.distribution!r}; expected one of {DISTRIBUTIONS}",
        )
        need(self.dtype in ("float32", "bfloat16"), f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        for name in ("patch_size", "stride", "embed_dim", "num_layers", "num_heads", "mlp_hidden_dim", "k_components"):
            need(int(getattr(self, name)) > 0, f"{name} must be positive, got {getattr(self, name)!r}")
        need(
            self.embed_dim % self.num_heads == 0,
            f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})",
        )
        need(
            (self.embed_dim // self.num_heads) % 2 == 0,
            f"head dimension embed_dim/num_heads = {self.embed_dim // self.num_heads} must be even (rotary)",
        )
        n = self.spacewise_every_n_layers
        need(n == -1 or n >= 1, f"spacewise_every_n_layers must be -1 or >= 1, got {n}")
        need(
            n == -1 or self.num_layers % n == 0,
            f"num_layers ({self.num_layers}) must be a multiple of spacewise_every_n_layers ({n})",
        )
        need(self.stride <= self.patch_size, f"stride ({self.stride}) must not exceed patch_size ({self.patch_size})")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_mixture_components(self) -> int:
        return self.k_components if self.distribution == "mixture_student_t" else 1

    def replace(self, **changes: Any) -> "TotoConfig":
        return dataclasses.replace(self, **changes)

    # ---- native dict form -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TotoConfig":
        """Native form (``to_dict``) or the reference's config.json form, told apart by their keys."""
        if "scaler_cls" in values or "output_distribution_classes" in values:
            return cls.from_reference_dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    # ---- the reference's config.json --------------------------------------------------------
    @classmethod
    def from_reference_dict(cls, values: dict[str, Any]) -> "TotoConfig":
        values = dict(values)
        for key in _REFERENCE_IGNORED_KEYS + _HUB_METADATA_KEYS:
            values.pop(key, None)
        scaler_cls = values.pop("scaler_cls", None)
        if scaler_cls not in _REFERENCE_SCALER_NAMES:
            raise ConfigError(
                f"unknown scaler_cls {scaler_cls!r}; expected one of {sorted(_REFERENCE_SCALER_NAMES)}"
            )
        classes = values.pop("output_distribution_classes", None)
        if not isinstance(classes, list) or len(classes) != 1 or classes[0] not in _REFERENCE_DISTRIBUTION_NAMES:
            raise ConfigError(
                f"unknown output_distribution_classes {classes!r}; expected a one-element list with one of "
                f"{sorted(_REFERENCE_DISTRIBUTION_NAMES)}"
            )
        distribution = _REFERENCE_DISTRIBUTION_NAMES[classes[0]]
        kwargs = values.pop("output_distribution_kwargs", None) or {}
        unknown_kwargs = sorted(set(kwargs) - {"k_components"})
        if unknown_kwargs:
            raise ConfigError(f"unknown output_distribution_kwargs key(s) {unknown_kwargs}")
        if distribution == "mixture_student_t" and "k_components" not in kwargs:
            raise ConfigError("output_distribution_kwargs.k_components is required for MixtureOfStudentTsOutput")
        native = {
            "scaler": _REFERENCE_SCALER_NAMES[scaler_cls],
            "distribution": distribution,
            "k_components": int(kwargs.get("k_components", 1)),
        }
        reference_keys = (
            "patch_size", "stride", "embed_dim", "num_layers", "num_heads", "mlp_hidden_dim", "dropout",
            "spacewise_every_n_layers", "spacewise_first", "stabilize_with_global", "scale_factor_exponent",
        )  # fmt: skip
        required = ("patch_size", "stride", "embed_dim", "num_layers", "num_heads", "mlp_hidden_dim")
        missing = [k for k in required if k not in values]
        if missing:
            raise ConfigError(f"config.json lacks required key(s) {missing}")
        for key in reference_keys:
            if key in values:
                native[key] = values.pop(key)
        # Keys of this project that may ride along in an exported config.json.
        for key in ("variate_labels", "max_context"):
            if key in values:
                native[key] = values.pop(key)
        if values:
            raise ConfigError(f"unknown config key(s) {sorted(values)} in reference config")
        return cls(**native)

    def to_reference_dict(self) -> dict[str, Any]:
        """The reference's config.json layout (what ``Toto.load_from_checkpoint`` reads)."""
        scaler = {v: k for k, v in _REFERENCE_SCALER_NAMES.items()}[self.scaler]
        distribution = {v: k for k, v in _REFERENCE_DISTRIBUTION_NAMES.items()}[self.distribution]
        out = {
            "patch_size": self.patch_size,
            "stride": self.stride,
            "embed_dim": self.embed_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_hidden_dim": self.mlp_hidden_dim,
            "dropout": self.dropout,
            "spacewise_every_n_layers": self.spacewise_every_n_layers,
            "spacewise_first": self.spacewise_first,
            "scaler_cls": scaler,
            "output_distribution_classes": [distribution],
            "output_distribution_kwargs": (
                {"k_components": self.k_components} if self.distribution == "mixture_student_t" else {}
            ),
            "stabilize_with_global": self.stabilize_with_global,
            "scale_factor_exponent": self.scale_factor_exponent,
            "use_memory_efficient_attention": False,
        }
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> "TotoConfig":
        return cls.from_dict(read_config_json(path))


def read_config_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        return json.load(f)


# The shape of Datadog/Toto-Open-Base-1.0 (151M parameters).
TOTO_OPEN_BASE_1_0 = TotoConfig()

PRESETS: dict[str, TotoConfig] = {
    "toto-open-base-1.0": TOTO_OPEN_BASE_1_0,
}


def preset(name: str) -> TotoConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]
