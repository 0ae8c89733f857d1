"""grain pipeline: sources -> shard -> shuffle -> mix -> window -> pack -> batch -> workers.

All steps up to the windows are ``MapDataset`` steps, i.e. pure functions of
the element index and the seed, so the stream is deterministic and its position
is one integer. Packing and batching are stateful ``IterDataset`` steps that run
inside each worker (one IPC transfer per batch); their state is the position of
the first series not yet emitted, so saving and restoring an iterator replays
exactly the batches an uninterrupted iterator would have produced. With
``num_workers > 0`` worker ``k`` packs mixed elements ``k, k + n, ...`` and the
batches are interleaved: deterministic for a given worker count.
"""

from __future__ import annotations

import functools

import grain
import numpy as np

from toto_jax.data import packing, sources
from toto_jax.data.config import DataConfig, SourceConfig
from toto_jax.data.quality import DataError


@functools.lru_cache(maxsize=4096)
def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (grain shuffle/random_map need < 2**32)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def build_source(source: SourceConfig, config: DataConfig, position: int):
    """The random-access source object for one ``SourceConfig``."""
    name = source.name or f"{source.type}[{position}]"
    if source.type == "synthetic":
        return sources.SyntheticSource(
            num_series=source.num_series,
            length=config.window_length,
            # Two synthetic sources without explicit seeds must not repeat each other.
            seed=derive_seed(config.seed, position) if source.seed is None else source.seed,
            max_variates=config.num_variates,
            kernelsynth_fraction=source.kernelsynth_fraction,
            periodic_fraction=source.periodic_fraction,
            outlier_fraction=source.outlier_fraction,
            short_fraction=source.short_fraction,
            name=name,
        )
    if source.type == "parquet":
        return sources.ParquetSource(
            source.path,
            name=name,
            cache_row_groups=source.cache_row_groups,
            cache_mb=source.cache_mb,
            on_bad_file=source.on_bad_file,
        )
    if source.type == "csv":
        return sources.CsvSource(source.path, name=name)
    if source.type == "arrays":
        raise DataError(f"data source {name}: an 'arrays' source holds in-memory series, given to train(source_objects=...)")
    raise DataError(f"unknown data source type {source.type!r}")


class _TagSource(grain.transforms.Map):
    """Adds the position of the source in the mixture to each record."""

    def __init__(self, source_index: int):
        self.source_index = source_index

    def map(self, record):
        record["source_index"] = self.source_index
        return record


@functools.lru_cache(maxsize=256)
def _permutation(seed: int, size: int) -> np.ndarray:
    # Cached: one per epoch for the block order and one per recently used block.
    # (grain's index_shuffle costs milliseconds per call on small domains.)
    return np.random.default_rng(seed).permutation(size)


class BlockShuffleMapDataset(grain.MapDataset):
    """Shuffles the order of blocks of ``block_size`` consecutive elements and the
    elements inside each block, differently in every epoch.

    A trade of randomness for locality: consecutive reads stay within a few
    Parquet row groups, which the source caches. The incomplete last block keeps
    its place (its elements are still shuffled).
    """

    def __init__(self, parent: grain.MapDataset, *, seed: int, block_size: int):
        super().__init__(parent)
        self._seed = int(seed)
        self._block_size = int(block_size)

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return f"BlockShuffleMapDataset(block_size={self._block_size})"

    def _shuffled_index(self, index: int) -> int:
        length = len(self._parent)
        epoch, position = divmod(index, length)
        epoch_seed = derive_seed(self._seed, epoch)
        full_blocks = length // self._block_size
        block, offset = divmod(position, self._block_size)
        if block < full_blocks:
            block = int(_permutation(epoch_seed, full_blocks)[block])
            block_length = self._block_size
        else:
            block_length = length - full_blocks * self._block_size
        offset = int(_permutation(derive_seed(epoch_seed, block), block_length)[offset])
        return epoch * length + block * self._block_size + offset

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._shuffled_index(index)]


def shard_and_shuffle(
    source,
    source_index: int,
    seed: int,
    shard_index: int,
    shard_count: int,
    num_epochs: int | None,
    shuffle_block: int = 0,
) -> grain.MapDataset:
    """Records of this host's shard, shuffled by seed, repeated ``num_epochs`` times."""
    dataset = grain.MapDataset.source(source)[shard_index::shard_count]
    if len(dataset) == 0:
        raise DataError(f"shard {shard_index}/{shard_count} of source {source!r} is empty")
    shuffle_seed = derive_seed(seed, source_index, 1)
    if shuffle_block > 0:
        dataset = BlockShuffleMapDataset(dataset, seed=shuffle_seed, block_size=shuffle_block)
    else:
        dataset = dataset.shuffle(seed=shuffle_seed)
    dataset = dataset.repeat(num_epochs)
    return dataset.map(_TagSource(source_index))


def build_group_dataset(config: DataConfig, source_objects=None) -> grain.MapDataset:
    """Mixed stream of group windows ({values, mask, source_index, series_index})."""
    config.validate()
    shard_index, shard_count = config.resolved_shard()
    if source_objects is None:
        source_objects = [build_source(s, config, i) for i, s in enumerate(config.sources)]
    if len(source_objects) != len(config.sources):
        raise DataError(
            f"{len(source_objects)} source objects given for {len(config.sources)} data.sources entries "
            "(weights and shuffle settings come from data.sources)"
        )
    per_source = [
        shard_and_shuffle(
            source,
            i,
            config.seed,
            shard_index,
            shard_count,
            config.num_epochs,
            shuffle_block=source_config.resolved_shuffle_block(),
        )
        for i, (source, source_config) in enumerate(zip(source_objects, config.sources))
    ]
    if len(per_source) == 1:
        mixed = per_source[0]
    else:
        mixed = grain.MapDataset.mix(per_source, [s.weight for s in config.sources])
    return mixed.random_map(
        packing.WindowTransform(config.window_length, config.num_variates), seed=derive_seed(config.seed, 2)
    )


def build_dataset(config: DataConfig, source_objects=None) -> grain.IterDataset:
    """The batched training pipeline: numpy dicts with ``series``, ``padding_mask``,
    ``id_mask`` of shape [B, V, context_length + patch_size].

    ``source_objects`` overrides the sources built from ``config.sources``
    (weights still come from the config); useful for in-memory data and tests.
    """
    groups = build_group_dataset(config, source_objects)
    read_options = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.read_buffer_size)
    dataset = groups.to_iter_dataset(read_options, allow_nones=True)
    dataset = packing.PackVariatesIterDataset(
        dataset,
        num_variates=config.num_variates,
        window_length=config.window_length,
        lookahead=config.pack_lookahead,
        include_provenance=config.include_provenance,
        max_consecutive_skips=config.max_consecutive_skips,
    )
    host, hosts = config.host_rows()
    dataset = dataset.batch(config.batch_size * hosts, drop_remainder=config.num_epochs is None)
    if hosts > 1:
        dataset = dataset.map(_HostRows(host, config.batch_size))
    if config.num_workers > 0:
        _ensure_absl_flags_parsed()
        dataset = dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.num_workers, per_worker_buffer_size=config.worker_buffer_size
            )
        )
    return dataset


class _HostRows:
    """Keep this host's rows of a global batch (``host_split: batch``)."""

    def __init__(self, host: int, rows: int):
        self.start, self.stop = host * rows, (host + 1) * rows

    def __call__(self, batch: dict) -> dict:
        return {key: value[self.start : self.stop] for key, value in batch.items()}


def _ensure_absl_flags_parsed() -> None:
    """grain's multiprocessing reads absl flags, which only absl.app parses;
    outside absl apps (pytest, our CLI) use their defaults instead of crashing."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_iterator(config: DataConfig, source_objects=None) -> grain.DatasetIterator:
    """An iterator of training batches with ``get_state()`` / ``set_state()``.

    The state is a JSON-serialisable dict (grain also checkpoints it through
    Orbax: ``grain.checkpoint``); restoring it needs the same config,
    including ``num_workers``.
    """
    return iter(build_dataset(config, source_objects))
