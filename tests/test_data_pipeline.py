"""The grain pipeline: batch layout, determinism, state restore, sharding, packing, mixing."""

import json

import numpy as np
import pytest

from toto_jax.data import (
    ArraySource,
    DataConfig,
    DataError,
    SourceConfig,
    make_iterator,
    packing,
)

PATCH = 8
CONTEXT = 32
WINDOW = CONTEXT + PATCH


def config(**overrides) -> DataConfig:
    values = dict(
        sources=[SourceConfig(type="synthetic", num_series=10_000)],
        context_length=CONTEXT,
        patch_size=PATCH,
        num_variates=6,
        batch_size=4,
        seed=0,
        read_threads=2,
        shard_index=0,
        shard_count=1,
        include_provenance=True,
    )
    values.update(overrides)
    return DataConfig(**values)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def tagged_series(num_series: int, seed: int = 0) -> list[np.ndarray]:
    """Series whose values encode (series, variate, time) exactly in float32:
    value = (4 * series + variate) * 128 + t, decoded by ``decode``.

    Variate counts 1..4, lengths from 10 (shorter than the window) to 100, some NaNs.
    """
    rng = np.random.default_rng(seed)
    series = []
    for index in range(num_series):
        variates = int(rng.integers(1, 5))
        length = int(rng.integers(10, 100))
        values = ((4.0 * index + np.arange(variates)[:, None]) * 128 + np.arange(length)[None, :])
        if rng.random() < 0.3:
            values[:, int(rng.integers(0, length))] = np.nan
        series.append(values)
    return series


def decode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series, variate, time) of values made by ``tagged_series``."""
    values = values.astype(np.int64)
    return values // 512, (values // 128) % 4, values % 128


def test_batch_layout_dtypes_and_masks():
    batch = next(make_iterator(config()))
    shape = (4, 6, WINDOW)
    assert batch["series"].shape == shape and batch["series"].dtype == np.float32
    assert batch["padding_mask"].shape == shape and batch["padding_mask"].dtype == np.bool_
    assert batch["id_mask"].shape == shape and batch["id_mask"].dtype == np.int32
    assert np.all(batch["series"][~batch["padding_mask"]] == 0)
    assert np.isfinite(batch["series"]).all()
    # ids are constant along time, so no patch spans two ids
    assert np.all(batch["id_mask"] == batch["id_mask"][..., :1])


def test_same_seed_same_batches_and_other_seed_differs():
    first = take(make_iterator(config()), 3)
    second = take(make_iterator(config()), 3)
    assert_batches_equal(first, second)
    other = take(make_iterator(config(seed=1)), 3)
    assert not np.array_equal(first[0]["series"], other[0]["series"])


def test_restored_state_continues_exactly():
    reference = take(make_iterator(config()), 7)
    iterator = make_iterator(config())
    take(iterator, 3)
    state = json.loads(json.dumps(iterator.get_state()))  # checkpoints store JSON
    restored = make_iterator(config())
    restored.set_state(state)
    assert_batches_equal(take(restored, 4), reference[3:])


@pytest.mark.timeout(180)
def test_restored_state_continues_exactly_with_two_workers():
    options = dict(num_workers=2, worker_buffer_size=1)
    iterator = make_iterator(config(**options))
    take(iterator, 3)
    state = json.loads(json.dumps(iterator.get_state()))
    reference = [None] * 3 + take(iterator, 3)  # the uninterrupted continuation
    iterator.close()
    restored = make_iterator(config(**options))
    restored.set_state(state)
    continued = take(restored, 3)
    restored.close()
    assert_batches_equal(continued, reference[3:])


def one_pass_series(source, **overrides) -> list[int]:
    cfg = config(num_epochs=1, batch_size=1, num_variates=4, **overrides)
    seen = []
    for batch in make_iterator(cfg, [source]):
        index = batch["series_index"][0]
        ids = batch["id_mask"][0, :, 0]
        for group in np.unique(ids[index >= 0]):
            seen.append(int(index[ids == group][0]))
    return seen


def test_two_shards_cover_one_unsharded_pass_without_overlap():
    source = ArraySource(tagged_series(41))
    unsharded = one_pass_series(source)
    assert sorted(unsharded) == list(range(41))  # one pass sees every series once
    shard0 = one_pass_series(source, shard_index=0, shard_count=2)
    shard1 = one_pass_series(source, shard_index=1, shard_count=2)
    assert not set(shard0) & set(shard1)
    assert sorted(shard0 + shard1) == sorted(unsharded)
    assert len(shard0) == 21 and len(shard1) == 20


def test_packing_keeps_series_apart_and_masks_exact():
    raw = tagged_series(60, seed=3)
    cfg = config(sources=[SourceConfig(type="synthetic")], num_variates=6, batch_size=8, num_epochs=1)
    groups_seen = 0
    for batch in make_iterator(cfg, [ArraySource(raw)]):
        for sample in range(batch["series"].shape[0]):
            ids = batch["id_mask"][sample, :, 0]
            index = batch["series_index"][sample]
            values = batch["series"][sample]
            mask = batch["padding_mask"][sample]
            # Unused slots: no real value, an id of their own.
            unused = index < 0
            assert not mask[unused].any()
            for group in np.unique(ids):
                slots = np.flatnonzero(ids == group)
                assert np.all(np.diff(slots) == 1)  # a group occupies contiguous slots
                if unused[slots].all():
                    assert len(slots) == 1
                    continue
                groups_seen += 1
                assert len(set(index[slots])) == 1  # one series per id
                series_id = int(index[slots[0]])
                source = raw[series_id]
                assert len(slots) == source.shape[0]
                # Real values decode to this series, variates in their order.
                decoded_series, decoded_variate, _ = decode(values[slots])
                assert np.all(decoded_series[mask[slots]] == series_id)
                np.testing.assert_array_equal(
                    decoded_variate[mask[slots]], np.broadcast_to(np.arange(len(slots))[:, None], mask[slots].shape)[mask[slots]]
                )
                # Padding: left-pad exactly where the series is shorter; NaN -> False.
                length = source.shape[1]
                if length < WINDOW:
                    expected = np.zeros((source.shape[0], WINDOW), dtype=bool)
                    expected[:, WINDOW - length :] = ~np.isnan(source)
                    np.testing.assert_array_equal(mask[slots], expected)
                    np.testing.assert_allclose(values[slots][:, WINDOW - length :], np.nan_to_num(source), rtol=1e-6)
                else:
                    # A contiguous window: the time code advances by one per column.
                    columns = np.flatnonzero(mask[slots][0])
                    times = decode(values[slots][0, columns])[2]
                    assert len(set(times - columns)) == 1
            # Different series get different ids, so variate attention cannot mix them.
            assert len(np.unique(ids[~unused])) == len(np.unique(index[~unused]))
            assert not set(ids[unused]) & set(ids[~unused])
    assert groups_seen == 60


def test_pack_groups_unit():
    values = np.arange(2 * WINDOW, dtype=np.float32).reshape(2, WINDOW)
    group = {"values": values, "mask": np.ones_like(values, dtype=bool), "source_index": 1, "series_index": 9}
    single = {"values": values[:1] + 1, "mask": np.zeros((1, WINDOW), bool), "source_index": 0, "series_index": 3}
    sample = packing.pack_groups([group, single], num_variates=5, window_length=WINDOW, include_provenance=True)
    np.testing.assert_array_equal(sample["id_mask"][:, 0], [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(sample["series"][:2], values)
    np.testing.assert_array_equal(sample["padding_mask"][:, 0], [True, True, False, False, False])
    np.testing.assert_array_equal(sample["series_index"], [9, 9, 3, -1, -1])
    np.testing.assert_array_equal(sample["source_index"], [1, 1, 0, -1, -1])


def test_random_window_left_pads_short_series_and_masks_nan():
    rng = np.random.default_rng(0)
    short = np.array([[1.0, np.nan, 3.0]], dtype=np.float32)
    values, mask = packing.random_window(short, 6, rng)
    np.testing.assert_array_equal(values, [[0, 0, 0, 1, 0, 3]])
    np.testing.assert_array_equal(mask, [[False, False, False, True, False, True]])
    long = np.arange(100, dtype=np.float32)[None]
    starts = {packing.random_window(long, 10, rng)[0][0, 0] for _ in range(200)}
    assert min(starts) >= 0 and max(starts) <= 90 and len(starts) > 50


def test_weighted_mixture_proportions():
    first = ArraySource([np.ones(50) * i for i in range(100)], name="a")
    second = ArraySource([np.ones(50) * i for i in range(100)], name="b")
    cfg = config(
        sources=[SourceConfig(type="synthetic", weight=1.0), SourceConfig(type="synthetic", weight=2.0)],
        num_variates=4,
        batch_size=8,
    )
    iterator = make_iterator(cfg, [first, second])
    sources = np.concatenate([batch["source_index"].ravel() for batch in take(iterator, 30)])
    assert np.mean(sources == 1) == pytest.approx(2 / 3, abs=0.02)


def test_synthetic_third_of_a_mixture_from_config(tmp_path):
    files = tmp_path / "csv"
    files.mkdir()
    for i in range(3):
        (files / f"s{i}.csv").write_text("timestamp,value\n" + "".join(f"2020-01-01 00:{m:02d}:00,{i}\n" for m in range(60)))
    cfg = config(
        sources=[
            SourceConfig(type="synthetic", weight=1 / 3),
            SourceConfig(type="csv", path=str(files), weight=2 / 3),
        ],
        batch_size=8,
        num_variates=1,
    )
    sources = np.concatenate([b["source_index"].ravel() for b in take(make_iterator(cfg), 12)])
    assert np.mean(sources == 0) == pytest.approx(1 / 3, abs=0.03)


def test_source_with_no_usable_series_raises_clear_error():
    bad = ArraySource([np.full(20, np.nan)] * 5, name="all-nan")
    cfg = config(max_consecutive_skips=50)
    with pytest.raises(DataError, match="no usable series"):
        next(make_iterator(cfg, [bad]))


def test_config_from_dict_and_validation():
    cfg = DataConfig.from_dict(
        {
            "context_length": 64,
            "patch_size": 16,
            "sources": [{"type": "synthetic", "weight": 1}, {"type": "parquet", "path": "/x", "weight": 2}],
        }
    )
    assert cfg.window_length == 80 and cfg.sources[1].weight == 2
    assert cfg.resolved_shard() == (0, 1)  # jax.process_index() / process_count() here
    with pytest.raises(DataError, match="unknown key"):
        DataConfig.from_dict({"contex_length": 64})
    with pytest.raises(DataError, match="multiple of"):
        DataConfig.from_dict({"context_length": 60, "patch_size": 16})
    with pytest.raises(DataError, match="needs a 'path'"):
        DataConfig.from_dict({"sources": [{"type": "csv"}]})
    with pytest.raises(DataError, match="unknown data source type"):
        DataConfig.from_dict({"sources": [{"type": "s3"}]})


def test_block_shuffle_is_a_local_permutation_per_epoch():
    import grain

    from toto_jax.data.pipeline import BlockShuffleMapDataset

    dataset = BlockShuffleMapDataset(grain.MapDataset.range(103), seed=5, block_size=10).repeat(2)
    elements = [dataset[i] for i in range(206)]
    first, second = elements[:103], elements[103:]
    assert sorted(first) == sorted(second) == list(range(103))
    assert first != second and first != list(range(103))
    # Locality: every run of 10 outputs comes from one block of 10 inputs.
    for start in range(0, 100, 10):
        assert len({value // 10 for value in first[start : start + 10]}) == 1
    assert sorted(first[100:]) == [100, 101, 102]  # the incomplete block stays last
    again = BlockShuffleMapDataset(grain.MapDataset.range(103), seed=5, block_size=10)
    assert [again[i] for i in range(103)] == first


def test_parquet_cache_bounded_by_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from toto_jax.data import ParquetSource

    table = pa.table({"target": pa.array([[1.0] * 1000 for _ in range(40)], pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=4)
    source = ParquetSource(tmp_path, cache_row_groups=100, cache_mb=3 * 16_500 / 2**20)
    for index in range(40):
        source[index]
    assert source.row_group_reads == 10
    assert 1 <= len(source._cache) <= 3 and source._cached_bytes <= 3 * 16_500


def test_first_fit_packing_restores_exactly_at_every_point():
    # Varied group sizes (1..4 variates of V=6) plus bad series keep groups
    # waiting across samples: the hard case for the packing state.
    raw = tagged_series(80, seed=5) + [np.full(30, np.nan)] * 8
    source = ArraySource(raw)
    cfg = config(num_variates=6, batch_size=1, pack_lookahead=5, max_consecutive_skips=100)
    reference = take(make_iterator(cfg, [source]), 40)
    for k in range(0, 35, 3):
        iterator = make_iterator(cfg, [source])
        take(iterator, k)
        state = json.loads(json.dumps(iterator.get_state()))
        restored = make_iterator(cfg, [source])
        restored.set_state(state)
        assert_batches_equal(take(restored, 5), reference[k : k + 5])


def slot_fill(lookahead: int) -> float:
    cfg = config(num_variates=8, batch_size=8, pack_lookahead=lookahead, num_epochs=1)
    batches = list(make_iterator(cfg, [ArraySource(tagged_series(400, seed=6))]))
    return float(np.mean([b["padding_mask"].any(axis=-1).mean() for b in batches[:-1]]))


def test_lookahead_packing_fills_more_slots():
    in_order, first_fit = slot_fill(1), slot_fill(8)
    assert first_fit > 0.97
    assert first_fit > in_order + 0.05
