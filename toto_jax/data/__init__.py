"""Pretraining data pipeline on grain (see docs/data.md)."""

from toto_jax.data.config import DataConfig, SourceConfig
from toto_jax.data.pipeline import build_dataset, build_group_dataset, make_iterator
from toto_jax.data.quality import DataError
from toto_jax.data.sources import ArraySource, CsvSource, ParquetSource, SyntheticSource

__all__ = [
    "ArraySource",
    "CsvSource",
    "DataConfig",
    "DataError",
    "ParquetSource",
    "SourceConfig",
    "SyntheticSource",
    "build_dataset",
    "build_group_dataset",
    "make_iterator",
]
