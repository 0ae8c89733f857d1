"""Configuration of the pretraining data pipeline (the YAML ``data:`` section).

Example::

    data:
      context_length: 512
      patch_size: 64
      num_variates: 8
      batch_size: 32
      seed: 0
      num_workers: 2
      sources:
        - {type: synthetic, weight: 1}
        - {type: parquet, path: /data/lotsa, weight: 2}
        - {type: csv, path: ../shared/data/nab/data, weight: 0.1}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from toto_jax.data.quality import DataError

SOURCE_TYPES = ("synthetic", "parquet", "csv", "arrays")  # arrays: in-memory series given to train() (fine-tuning)


@dataclasses.dataclass
class SourceConfig:
    """One weighted data source. Fields not used by ``type`` are ignored."""

    type: str
    weight: float = 1.0
    path: str | None = None  # parquet / csv: file or directory
    name: str | None = None
    # synthetic
    num_series: int = 1_000_000  # virtual size of one synthetic "epoch"
    seed: int | None = None  # defaults to DataConfig.seed
    kernelsynth_fraction: float = 0.5
    periodic_fraction: float = 0.0  # strictly periodic series (checked before kernelsynth_fraction)
    outlier_fraction: float = 0.0  # series given isolated extreme outliers
    short_fraction: float = 0.1
    # Shuffle: 0 = global shuffle; N > 0 = shuffle the order of blocks of N
    # consecutive rows and the rows inside each block (cache-friendly reads).
    # None = 1024 for parquet sources, global otherwise.
    shuffle_block: int | None = None
    # parquet
    cache_row_groups: int = 64  # per process
    cache_mb: float = 256.0  # per process
    on_bad_file: str = "skip"  # or "raise"

    def resolved_shuffle_block(self) -> int:
        if self.shuffle_block is not None:
            return int(self.shuffle_block)
        return 1024 if self.type == "parquet" else 0

    def validate(self) -> None:
        if self.type not in SOURCE_TYPES:
            raise DataError(f"unknown data source type {self.type!r}; expected one of {SOURCE_TYPES}")
        if not self.weight > 0:
            raise DataError(f"data source weight must be > 0, got {self.weight} for {self.type} source")
        if self.type in ("parquet", "csv") and not self.path:
            raise DataError(f"{self.type} data source needs a 'path'")
        if self.shuffle_block is not None and self.shuffle_block < 0:
            raise DataError(f"shuffle_block must be >= 0, got {self.shuffle_block}")
        if self.on_bad_file not in ("skip", "raise"):
            raise DataError(f"on_bad_file must be 'skip' or 'raise', got {self.on_bad_file!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SourceConfig":
        return _from_dict(cls, values, "data.sources[]")


@dataclasses.dataclass
class DataConfig:
    """Fields of the YAML ``data:`` section."""

    sources: list[SourceConfig] = dataclasses.field(default_factory=lambda: [SourceConfig(type="synthetic")])
    context_length: int = 512  # T, a multiple of patch_size
    patch_size: int = 64
    num_variates: int = 8  # V variate slots per sample
    pack_lookahead: int = 8  # first-fit packing among the next N series (1: in order)
    batch_size: int = 32
    seed: int = 0
    num_workers: int = 0  # grain worker processes (0: read in this process)
    worker_buffer_size: int = 2  # batches buffered per worker
    read_threads: int = 4  # threads reading records in each process
    read_buffer_size: int = 64  # records prefetched by those threads
    shard_index: int | None = None  # defaults to jax.process_index()
    shard_count: int | None = None  # defaults to jax.process_count()
    # How hosts divide the work. "sources": each host reads its own shard of every source (scales).
    # "batch": each host builds the whole global batch (batch_size x hosts) and keeps its rows, so
    # batches do not depend on the host count (reproducible small multi-host runs; every host reads all).
    host_split: str = "sources"
    num_epochs: int | None = None  # None: repeat sources forever
    include_provenance: bool = False  # add source_index / series_index [B, V]
    max_consecutive_skips: int = 10_000  # then a source is declared unusable

    @property
    def window_length(self) -> int:
        return self.context_length + self.patch_size

    def validate(self) -> None:
        if self.patch_size <= 0 or self.context_length <= 0:
            raise DataError("data.context_length and data.patch_size must be positive")
        if self.context_length % self.patch_size:
            raise DataError(
                f"data.context_length ({self.context_length}) must be a multiple of "
                f"data.patch_size ({self.patch_size})"
            )
        for name in ("num_variates", "pack_lookahead", "batch_size", "read_buffer_size", "worker_buffer_size"):
            if getattr(self, name) <= 0:
                raise DataError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.num_workers < 0 or self.read_threads < 0:
            raise DataError("data.num_workers and data.read_threads must be >= 0")
        if not self.sources:
            raise DataError("data.sources is empty")
        for source in self.sources:
            if not isinstance(source, SourceConfig):
                raise DataError(f"data.sources entries must be SourceConfig, got {type(source).__name__}")
            source.validate()
        if (self.shard_index is None) != (self.shard_count is None):
            raise DataError("set both data.shard_index and data.shard_count, or neither")
        if self.shard_count is not None and not 0 <= self.shard_index < self.shard_count:
            raise DataError(f"data.shard_index {self.shard_index} not in [0, {self.shard_count})")
        if self.host_split not in ("sources", "batch"):
            raise DataError(f"data.host_split must be 'sources' or 'batch', got {self.host_split!r}")
        if self.host_split == "batch" and self.shard_count is not None:
            raise DataError("data.host_split 'batch' reads unsharded sources; do not set data.shard_index/count")
        if self.num_epochs is not None and self.num_epochs <= 0:
            raise DataError("data.num_epochs must be positive or null")

    def resolved_shard(self) -> tuple[int, int]:
        """(shard index, shard count) of the sources: explicit values or this JAX process's."""
        if self.shard_count is not None:
            return int(self.shard_index), int(self.shard_count)
        if self.host_split == "batch":
            return 0, 1
        return _process_index_and_count()

    def host_rows(self) -> tuple[int, int]:
        """(this host's index, host count) for ``host_split: batch``; (0, 1) otherwise."""
        return _process_index_and_count() if self.host_split == "batch" else (0, 1)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DataConfig":
        values = dict(values)
        sources = values.pop("sources", None)
        config = _from_dict(cls, values, "data")
        if sources is not None:
            if not isinstance(sources, list):
                raise DataError(f"data.sources must be a list, got {type(sources).__name__}")
            config.sources = [SourceConfig.from_dict(source) for source in sources]
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _from_dict(cls, values: Mapping[str, Any], where: str):
    if not isinstance(values, Mapping):
        raise DataError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DataError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")
    return cls(**values)


def _process_index_and_count() -> tuple[int, int]:
    import jax  # imported lazily: workers and the CLI do not need JAX

    return jax.process_index(), jax.process_count()
