"""Training configuration: one YAML file -> ``TrainConfig``, with ``key=value`` overrides in dotted names.

Sections: ``model`` (``TotoConfig`` fields, or ``Toto2Config`` fields with ``family: toto2``), ``data``
(``DataConfig``), ``optimizer`` (``OptimizerConfig``), ``loss`` (Toto 1.0), ``masking`` (Toto 2.0), ``mesh``
(shape and logical-axis rules), ``checkpoint``, ``logging``, ``validation`` (fine-tuning); plus top-level
``steps``, ``seed`` and ``num_exogenous_variables``. Unknown keys are rejected with the name of the offending key.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .. import storage
from ..config import ConfigError, TotoConfig
from ..data.config import DataConfig
from ..models.toto2.config import Toto2Config
from ..sharding import DEFAULT_RULES
from .optimizer import OptimizerConfig
from .toto2_objective import MaskingConfig

MODEL_CONFIGS = {"toto1": TotoConfig, "toto2": Toto2Config}  # by ``model.family``


def model_config_from_dict(values: Mapping[str, Any]) -> TotoConfig | Toto2Config:
    """The ``model`` section: ``family`` (default toto1) picks the config class of the other keys."""
    values = dict(values)
    family = values.pop("family", "toto1")
    if family not in MODEL_CONFIGS:
        raise ConfigError(f"model.family must be one of {sorted(MODEL_CONFIGS)}, got {family!r}")
    return MODEL_CONFIGS[family].from_dict(values)


def model_config_to_dict(config: TotoConfig | Toto2Config) -> dict[str, Any]:
    values = config.to_dict()
    return values if config.family == "toto1" else {"family": config.family, **values}


def forecasting_model_config(model: TotoConfig | Toto2Config, context_length: int) -> TotoConfig | Toto2Config:
    """The config a run's weights forecast with: ``max_context`` capped at the context the run trained on
    (``data.context_length``). Positions it never saw forecast worse: toto2-small's stage 5 on the validation
    set, short-term MASE 0.720 from 4096 steps, 0.591 from its 2048."""
    return model.replace(max_context=min(model.max_context, context_length))


@dataclasses.dataclass
class LossConfig:
    lambda_nll: float = 0.575
    robust_delta: float = 0.1
    robust_alpha: float = 0.0


@dataclasses.dataclass
class MeshConfig:
    shape: list[int] = dataclasses.field(default_factory=lambda: [-1, 1, 1])  # (data, fsdp, tensor); -1 = the rest
    # [logical axis name, mesh axis | [mesh axes] | null] pairs; the first rule whose axes are free wins.
    rules: list[list[Any]] = dataclasses.field(default_factory=lambda: [[k, v] for k, v in DEFAULT_RULES])

    def rule_tuples(self) -> tuple[tuple[str, Any], ...]:
        return tuple((str(name), tuple(axes) if isinstance(axes, list) else axes) for name, axes in self.rules)


@dataclasses.dataclass
class CheckpointConfig:
    every: int = 1000  # steps between saves (the last step is always saved)
    keep_last: int = 3  # most recent checkpoints kept
    keep_every: int | None = None  # also keep every checkpoint whose step is a multiple of this
    async_save: bool = True
    # also save when this many minutes passed since the last save (checked at logging.every steps);
    # these checkpoints are pruned by keep_last / keep_every like the others
    every_minutes: float | None = None


@dataclasses.dataclass
class LoggingConfig:
    every: int = 10  # steps between metric records
    tensorboard: bool = True
    progress_bar: bool = True
    peak_flops_per_device: float | None = None  # for MFU; None: measured with a matmul at start-up


@dataclasses.dataclass
class ValidationConfig:
    """Held-out validation, used when training is given series to hold out from (``toto-jax finetune``)."""

    held_out: int | None = None  # last steps of every series held out; None: 10 % of the shortest, >= one patch
    every: int = 100  # steps between validation passes (and the last step)
    patience: int | None = 5  # passes without improvement before stopping early; None: never
    max_windows: int = 64  # validation windows, the most recent first


@dataclasses.dataclass
class TrainConfig:
    model: TotoConfig | Toto2Config = dataclasses.field(default_factory=TotoConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    masking: MaskingConfig = dataclasses.field(default_factory=MaskingConfig)
    steps: int = 1000
    seed: int = 0
    num_exogenous_variables: int = 0  # the last variates of each sample; excluded from the loss
    # JAX's persistent compilation cache (local, gs:// or s3://): restarts load compiled programs
    compilation_cache_dir: str | None = None

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.data.patch_size != self.model.patch_size:
            raise ConfigError(
                f"data.patch_size ({self.data.patch_size}) must equal model.patch_size ({self.model.patch_size})"
            )
        if not 0 <= self.num_exogenous_variables < self.data.num_variates:
            raise ConfigError(
                f"num_exogenous_variables ({self.num_exogenous_variables}) must be in [0, data.num_variates)"
            )
        if len(self.mesh.shape) != 3:
            raise ConfigError(f"mesh.shape must have 3 entries (data, fsdp, tensor), got {self.mesh.shape}")
        for rule in self.mesh.rules:
            if not (isinstance(rule, (list, tuple)) and len(rule) == 2):
                raise ConfigError(f"mesh.rules entries must be [logical_name, mesh_axes], got {rule!r}")
        if self.checkpoint.every < 1 or self.checkpoint.keep_last < 1 or self.logging.every < 1:
            raise ConfigError("checkpoint.every, checkpoint.keep_last and logging.every must be >= 1")
        if self.checkpoint.every_minutes is not None and not self.checkpoint.every_minutes > 0:
            raise ConfigError(f"checkpoint.every_minutes must be > 0, got {self.checkpoint.every_minutes}")
        if self.validation.every < 1 or self.validation.max_windows < 1:
            raise ConfigError("validation.every and validation.max_windows must be >= 1")
        if self.validation.patience is not None and self.validation.patience < 1:
            raise ConfigError(f"validation.patience must be >= 1 or null, got {self.validation.patience}")
        if self.validation.held_out is not None and self.validation.held_out < 1:
            raise ConfigError(f"validation.held_out must be >= 1 or null, got {self.validation.held_out}")
        self.optimizer.validate(self.model.family)
        self.masking.validate()
        if self.model.family == "toto2" and self.model.num_output_patches != 1:
            raise ConfigError(
                f"model.num_output_patches must be 1 for training (got {self.model.num_output_patches}): "
                "the objective trains the next-patch output only"
            )
        self.data.validate()
        if self.data.batch_size % self.optimizer.accumulation_steps:
            raise ConfigError(
                f"data.batch_size ({self.data.batch_size}) must be a multiple of "
                f"optimizer.accumulation_steps ({self.optimizer.accumulation_steps})"
            )

    # ---- dict form ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = model_config_to_dict(self.model)
        out["data"] = self.data.to_dict()
        for name in ("optimizer", "loss", "mesh", "checkpoint", "logging", "validation", "masking"):
            out[name] = dataclasses.asdict(getattr(self, name))
        return copy.deepcopy(out)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        values = dict(values)
        _reject_unknown(values, {f.name for f in dataclasses.fields(cls)}, "")
        sections = {
            "model": lambda v: model_config_from_dict(_mapping(v, "model")),
            "data": lambda v: DataConfig.from_dict(_mapping(v, "data")),
            "optimizer": lambda v: _section(OptimizerConfig, v, "optimizer"),
            "loss": lambda v: _section(LossConfig, v, "loss"),
            "mesh": lambda v: _section(MeshConfig, v, "mesh"),
            "checkpoint": lambda v: _section(CheckpointConfig, v, "checkpoint"),
            "logging": lambda v: _section(LoggingConfig, v, "logging"),
            "validation": lambda v: _section(ValidationConfig, v, "validation"),
            "masking": lambda v: _section(MaskingConfig, v, "masking"),
        }
        kwargs = {name: build(values.pop(name)) for name, build in sections.items() if name in values}
        config = cls(**kwargs, **values)
        config.validate()
        return config


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"config section {where!r} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _reject_unknown(values: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        names = [f"{where}{k}" for k in unknown]
        raise ConfigError(f"unknown config key(s) {names}; known keys in this section: {sorted(known)}")


def _section(cls, value: Any, where: str):
    values = _mapping(value, where)
    _reject_unknown(values, {f.name for f in dataclasses.fields(cls)}, f"{where}.")
    for field in dataclasses.fields(cls):
        if field.name in values and str(field.type).startswith("float"):
            values[field.name] = _number_or_self(values[field.name])
            if isinstance(values[field.name], str):
                raise ConfigError(f"{where}.{field.name} must be a number, got {values[field.name]!r}")
    return cls(**values)


def _number_or_self(value: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; such strings are numbers here."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``["optimizer.learning_rate=3e-4", "steps=10"]`` -> the dict with those entries set (YAML-parsed values).

    Data sources are a list; index them like ``data.sources.0.weight=2``.
    """
    values = copy.deepcopy(values)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        key, raw = override.split("=", 1)
        value = _number_or_self(yaml.safe_load(raw) if raw else None)
        parts = key.strip().split(".")
        node: Any = values
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, part, key)]
                continue
            if part not in node:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: depth + 1])} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, key)] = value
        else:
            node[last] = value
    return values


def _list_index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {key!r}: {part!r} is not an index of a list of length {len(node)}")
    return int(part)




def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML training config (or the defaults when ``path`` is None) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        with open(path) as f:
            loaded = yaml.safe_load(f)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a training config must be a mapping of sections")
        values = loaded or {}
    return TrainConfig.from_dict(apply_overrides(values, overrides))


def dump_config(config: TrainConfig, path) -> None:
    """Write the config as YAML to ``path`` (local, or an object-store path such as ``epath.Path``)."""
    storage.as_path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
