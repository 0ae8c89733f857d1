"""Context preprocessing (toto_jax.forecasting.preprocessing) and the option flags: outlier clipping,
normalization statistics and the command-line mapping to ForecastOptions, against hand-computed values."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from toto_jax.forecasting.options import (
    ForecastOptions,
    add_options_arguments,
    options_from_args,
)
from toto_jax.forecasting.preprocessing import clip_context_outliers, normalize_context


def test_clip_context_outliers_hand_computed():
    # observed: 0..99 and one glitch of 10000 (101 points): q01 = 1, q99 = 99, central range 98
    values = np.concatenate([np.arange(100.0), [-7.0, 10000.0]]).astype(np.float32)[None, None]
    valid = np.ones(values.shape, bool)
    valid[..., 100] = False  # masked: neither a statistic nor clipped
    clipped = clip_context_outliers(values, valid, 10.0)
    assert clipped.dtype == np.float64  # statistics and clipped values stay float64 until normalized
    np.testing.assert_array_equal(clipped[0, 0, :101], values[0, 0, :101])
    assert clipped[0, 0, 101] == 99.0 + 10 * 98.0
    values[0, 0, 101] = -10000.0  # low glitch: q01 = 0, q99 = 98 (order statistics 1 and 99 of 0..100)
    assert clip_context_outliers(values, valid, 10.0)[0, 0, 101] == -10 * 98.0
    # a short context: the single largest and smallest values never set the range (sorted: 1 2 3 5 1e6)
    short = np.array([[[5.0, 1.0, 2.0, 3.0, 1e6]]], np.float32)
    assert clip_context_outliers(short, np.ones(short.shape, bool), 1.0)[0, 0, -1] == 5.0 + (5.0 - 2.0)


def test_clip_context_outliers_keeps_normal_shapes_and_large_offsets():
    square = np.where(np.arange(288) % 96 < 24, 80.0, 20.0)  # a noiseless square wave: nothing is an outlier
    sparse = np.zeros(288)
    sparse[[10, 60]] = [5.0, 40.0]  # error counts: their rare values are their signal
    constant = np.full(288, 3.0)
    offset = 1e9 + np.array([64.0, -64.0, 0.0, 128.0] * 72)  # float32 spacing at 1e9 is 64
    offset[50] = 1e9 + 64 * 1e4  # a glitch: q01 = 1e9 - 64, q99 = 1e9 + 128
    values = np.stack([square, sparse, constant, offset]).astype(np.float32)[None]
    clipped = clip_context_outliers(values, np.ones(values.shape, bool), 10.0)
    np.testing.assert_array_equal(clipped[0, :3], values[0, :3])
    np.testing.assert_array_equal(np.delete(clipped[0, 3], 50), np.delete(values[0, 3], 50))
    assert clipped[0, 3, 50] == np.float32(1e9 + 128 + 10 * 192)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "3", True])
def test_options_reject_bad_clip_limits(bad):
    with pytest.raises(ValueError, match="ForecastOptions.clip_outliers must be a positive number or None"):
        ForecastOptions(clip_outliers=bad)


def test_option_flags_map_onto_forecast_options():
    """No flags: ForecastOptions(); --reference-options: the reference, with any other flag on top; bad
    values are refused by argparse or named by their flag."""
    parser = argparse.ArgumentParser()
    add_options_arguments(parser)
    assert options_from_args(parser.parse_args([])) == ForecastOptions()
    assert options_from_args(parser.parse_args(["--reference-options"])) == ForecastOptions.reference()
    given = parser.parse_args(["--reference-options", "--clip-outliers", "2.5", "--sampling", "comonotone",
                               "--context-length", "512", "--memory-budget-gb", "0.5", "--value-cap", "none"])
    assert options_from_args(given) == ForecastOptions.reference(
        clip_outliers=2.5, sampling="comonotone", context_length=512, memory_budget=1 << 29
    )
    assert options_from_args(parser.parse_args(["--clip-outliers", "none"])).clip_outliers is None
    for bad in ("0", "-5", "lots"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--clip-outliers", bad])
    with pytest.raises(ValueError, match="--memory-budget-gb must be positive, got -1"):
        options_from_args(parser.parse_args(["--memory-budget-gb", "-1"]))
    with pytest.raises(ValueError, match="--context-length must be a positive integer or None, got 0"):
        options_from_args(parser.parse_args(["--context-length", "0"]))


def test_standardize_context_statistics():
    values = np.array([[[1e9 + 64, 1e9 - 64, 0.0, 1e9 + 64]]], np.float32)  # float32 spacing at 1e9 is 64
    valid = np.array([[[True, True, False, True]]])
    standardized, shift, unit = normalize_context(values, valid, "standardize")
    observed = values[valid].astype(np.float64)
    np.testing.assert_allclose(shift[..., 0], observed.mean())
    np.testing.assert_allclose(unit[..., 0], observed.std())
    assert standardized[0, 0, 2] == 0.0 and abs(standardized[valid].mean()) < 1e-6
