"""What ``forecast`` accepts, turned into float64 rows with masks, ids and (for pandas) time indexes.

Accepted: a numpy array [variate, time] or [batch, variate, time] of any float or integer dtype; a list
of [variate, time] arrays (lengths may differ); a pandas DataFrame (rows = time, columns = variates) or
Series, or a list of them. A DataFrame whose time is a column (as ``pd.read_csv`` gives it) is read as
``toto-jax forecast`` reads a table: wide (a timestamp column + one column per variate: one series) or
long (``unique_id``, ``ds``, ``y``: one series per id). Values stay float64 until the options' normalization has removed offsets, so
a counter at 1e12 keeps its small signal. Every problem is a ``ForecastError`` naming the series,
variate or column, raised before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from .options import ForecastOptions
from .preprocessing import fill_gaps, trailing_gap


class ForecastError(ValueError):
    """Input that cannot be forecast, with a message naming the offending series."""


@dataclasses.dataclass
class TimeIndex:
    """A pandas input's time axis: its labels, variate names and the labels of the next steps."""

    variates: list[str]
    future: object  # pandas Index of the forecast steps


@dataclasses.dataclass
class Rows:
    values: list[np.ndarray]  # float64 [variate, time] per series
    dtype: np.dtype  # of the forecast: float64 for float64/integer/pandas input, else float32
    index: list[TimeIndex] | None  # per series, for pandas input


def _is_pandas(value) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and type(value).__name__ in ("DataFrame", "Series")


def _future_labels(index, horizon: int, name: str):
    import pandas as pd

    from .tabular import TableError, future_timestamps, infer_frequency

    if isinstance(index, pd.DatetimeIndex):
        try:
            frequency = infer_frequency(index, name)
        except TableError as error:
            raise ForecastError(str(error)) from None
        return future_timestamps(index[-1], frequency, horizon)
    if pd.api.types.is_integer_dtype(index.dtype) and len(index) >= 2:
        steps = np.diff(index.to_numpy())
        if np.all(steps == steps[0]) and steps[0] > 0:
            return pd.RangeIndex(index[-1] + steps[0], index[-1] + steps[0] * (horizon + 1), steps[0])
    raise ForecastError(
        f"{name}: the index must be a regular DatetimeIndex or an increasing integer index (got "
        f"{type(index).__name__} of dtype {index.dtype}); rows are time steps, columns are variates"
    )


LAYOUT_HINT = (
    "a DataFrame's rows are time steps and its columns variates: make the time its index "
    "(frame.set_index(pd.to_datetime(frame['timestamp'])).drop(columns='timestamp')), or keep it a column of "
    "datetimes or date strings beside numeric value columns (wide), or give columns unique_id, ds, y (long), as "
    "toto-jax forecast reads tables"
)


def _pandas_rows(frame, position: int, horizon: int) -> tuple[list[np.ndarray], list[TimeIndex]]:
    """One pandas input's series: a time-indexed frame or a Series is one; a frame with its time in a column
    is read as a table (wide: one series; long: one per ``unique_id``, its variate named by the id)."""
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame(name=frame.name if frame.name is not None else "value")
    time_in_a_column = not isinstance(frame.index, pd.DatetimeIndex) and any(
        not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype) for dtype in frame.dtypes
    )
    if time_in_a_column and frame.shape[0] > 0:
        from .tabular import TableError, parse_table

        try:
            table = parse_table(frame)
        except TableError as error:
            raise ForecastError(f"series {position}: {error}; {LAYOUT_HINT}") from None
        futures = table.future_timestamps(horizon)
        names = [table.names] * len(table.values) if table.layout == "wide" else [[name] for name in table.names]
        return list(table.values), [TimeIndex(n, future) for n, future in zip(names, futures)]
    values, index = _pandas_row(frame, position, horizon)
    return [values], [index]


def _pandas_row(frame, position: int, horizon: int) -> tuple[np.ndarray, TimeIndex]:
    import pandas as pd

    name = f"series {position}"
    if frame.shape[1] == 0:
        raise ForecastError(f"{name}: the DataFrame has no columns (variates)")
    if frame.shape[0] == 0:
        raise ForecastError(f"{name}: the DataFrame has no rows (time steps)")
    columns = []
    for column in frame.columns:
        data = frame[column]
        if not pd.api.types.is_numeric_dtype(data) or pd.api.types.is_bool_dtype(data):
            raise ForecastError(f"{name}: column {column!r} is not numeric (dtype {data.dtype}); {LAYOUT_HINT}")
        columns.append(data.to_numpy(np.float64, na_value=np.nan))
    future = _future_labels(frame.index, horizon, name)
    return np.stack(columns), TimeIndex([str(c) for c in frame.columns], future)


def _array_row(value, what: str) -> tuple[np.ndarray, bool]:
    """float64 values and whether the input was float64 precision (float64 or integer)."""
    array = np.asarray(value)
    numeric = np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    if array.dtype == object or not numeric:
        raise ForecastError(f"{what} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64), array.dtype.itemsize > 4 or np.issubdtype(array.dtype, np.integer)


def read_rows(series, horizon: int, patch_size: int) -> Rows:
    """Input in any accepted form -> one float64 [variate, time] array per series."""
    items = list(series) if isinstance(series, (list, tuple)) else None
    if items is not None and not items:
        raise ForecastError("no series given (an empty list)")
    if items is None and _is_pandas(series):
        items = [series]
    if items is not None and any(_is_pandas(item) for item in items):
        if not all(_is_pandas(item) for item in items):
            raise ForecastError("a list of series must be all pandas objects or all arrays")
        rows, index = [], []
        for i, item in enumerate(items):
            item_rows, item_index = _pandas_rows(item, i, horizon)
            rows += item_rows
            index += item_index
        return Rows(rows, np.dtype(np.float64), index)
    if items is None:
        array, wide = _array_row(series, "series")
        if array.ndim == 2:  # one series; the result keeps a batch axis of 1, as the reference's
            array = array[None]
        if array.ndim != 3:
            raise ForecastError(
                f"series must have shape [variate, time] or [batch, variate, time], got shape {array.shape}"
            )
        if array.shape[0] == 0:
            raise ForecastError(f"no series given (batch size 0, shape {array.shape})")
        rows, precise = list(array), [wide]
    else:
        rows, precise = zip(*(_array_row(item, f"series {i}") for i, item in enumerate(items)))
        rows = list(rows)
    for i, row in enumerate(rows):
        if row.ndim != 2:
            raise ForecastError(f"series {i} must have shape [variate, time], got shape {row.shape}")
        if row.shape[0] == 0:
            raise ForecastError(f"series {i} has no variates (shape {row.shape})")
        if row.shape[1] == 0:
            raise ForecastError(f"series {i} has no time steps (shape {row.shape})")
        if row.shape[0] != rows[0].shape[0]:
            raise ForecastError(
                f"series {i} has {row.shape[0]} variates but series 0 has {rows[0].shape[0]}; "
                "forecast series with different variate counts in separate calls"
            )
    variates, longest = rows[0].shape[0], max(r.shape[1] for r in rows)
    if longest < patch_size and variates > longest:
        warnings.warn(
            f"series have {variates} variates of only {longest} time steps each: arrays are [variate, time]; "
            "if rows are time steps, pass the transpose (or a DataFrame)",
            stacklevel=3,
        )
    return Rows(rows, np.dtype(np.float64 if any(precise) else np.float32), None)


def _split_rows(mask, count: int, name: str) -> list[np.ndarray] | None:
    """A per-series list for ``mask`` matching the series' list/array layout."""
    if mask is None:
        return None
    if isinstance(mask, (list, tuple)):
        return [np.asarray(m) for m in mask]
    array = np.asarray(mask)
    if array.ndim == 2 and count == 1:
        return [array]
    if array.ndim != 3:
        raise ForecastError(f"{name} must have the series' shape, got shape {array.shape}")
    return list(array)


@dataclasses.dataclass
class Context:
    """Contexts [batch, variate, time] left-padded to whole patches, float64."""

    values: np.ndarray
    valid: np.ndarray
    ids: np.ndarray
    trailing: np.ndarray  # [batch] steps cut from the end of each series (a gap forecast through)


def prepare_context(config, rows: Rows, options: ForecastOptions, padding_mask=None, id_mask=None) -> Context:
    """Masks, gap handling (``options.gaps``) and the most recent ``options.context_length`` steps."""
    masks = _split_rows(padding_mask, len(rows.values), "padding_mask")
    ids = _split_rows(id_mask, len(rows.values), "id_mask")
    for name, given in (("padding_mask", masks), ("id_mask", ids)):
        if given is not None and len(given) != len(rows.values):
            raise ForecastError(f"{name} has {len(given)} rows, expected one per series ({len(rows.values)})")
        for i, row in enumerate(rows.values):
            if given is not None and given[i].shape != row.shape:
                raise ForecastError(f"{name} for series {i} has shape {given[i].shape}, expected {row.shape}")

    limit = min(options.context_length or config.max_context, config.max_context)
    if masks is None and ids is None:
        context = _prepare_alike(config, rows, options, limit)
        if context is not None:
            return context
    prepared, trailing = [], []
    for i, row in enumerate(rows.values):
        if np.isinf(row).any():
            variate, step = (int(x[0]) for x in np.nonzero(np.isinf(row)))
            raise ForecastError(f"series {i}, variate {variate}: infinite value at step {step}")
        valid = ~np.isnan(row)
        if masks is not None:
            valid &= masks[i].astype(bool)
        row_ids = np.zeros(row.shape, np.int32) if ids is None else ids[i].astype(np.int32)
        cut = 0
        if options.gaps == "fill":
            cut = trailing_gap(valid)
            if cut == row.shape[1]:
                raise ForecastError(f"series {i} has no observed values (all NaN or masked)")
            if cut:
                row, valid, row_ids = row[:, :-cut], valid[:, :-cut], row_ids[:, :-cut]
        keep = min(row.shape[1], limit)
        row, valid, row_ids = row[:, -keep:], valid[:, -keep:], row_ids[:, -keep:]
        if options.gaps == "fill":
            row, valid = fill_gaps(row, valid)
        empty = np.flatnonzero(~valid.any(axis=1))
        if empty.size:
            raise ForecastError(
                f"series {i}: variate(s) {empty.tolist()} have no observed values (all NaN or masked)"
                + (f" in the last {keep} steps the model sees" if keep < rows.values[i].shape[1] - cut else "")
            )
        prepared.append((row, valid, row_ids))
        trailing.append(cut)

    patch = config.patch_size
    length = -(-max(r.shape[1] for r, _, _ in prepared) // patch) * patch
    shape = (len(prepared), prepared[0][0].shape[0], length)
    values, valid_all, groups = np.zeros(shape), np.zeros(shape, bool), np.zeros(shape, np.int32)
    for i, (row, valid, row_ids) in enumerate(prepared):
        keep = row.shape[1]
        values[i, :, -keep:] = np.where(valid, row, 0.0)
        valid_all[i, :, -keep:] = valid
        # Left padding repeats the leftmost id, as the reference's ``pad_id_mask``.
        groups[i] = row_ids[:, :1]
        groups[i, :, -keep:] = row_ids
    return Context(values, valid_all, groups, np.array(trailing, np.int64))


def _prepare_alike(config, rows: Rows, options: ForecastOptions, limit: int) -> Context | None:
    """``prepare_context`` at once for series of one shape without masks, infinities, a trailing gap or an empty
    variate (a fleet's usual batch): the same arrays as series by series, in a few array operations. None when
    any series needs the general path (which also words the errors)."""
    shapes = {row.shape for row in rows.values}
    if len(shapes) != 1:
        return None
    values = np.stack(rows.values)
    if np.isinf(values).any():
        return None
    valid = ~np.isnan(values)
    if options.gaps == "fill" and not valid[:, :, -1].any(axis=1).all():
        return None  # a trailing gap: cut per series
    keep = min(values.shape[-1], limit)
    values, valid = values[..., -keep:], valid[..., -keep:]
    if options.gaps == "fill":
        values, valid = fill_gaps(values, valid)
    if not valid.any(axis=-1).all():
        return None
    patch = config.patch_size
    length = -(-keep // patch) * patch
    shape = values.shape[:2] + (length,)
    padded, padded_valid = np.zeros(shape), np.zeros(shape, bool)
    padded[..., -keep:] = np.where(valid, values, 0.0)
    padded_valid[..., -keep:] = valid
    return Context(padded, padded_valid, np.zeros(shape, np.int32), np.zeros(len(rows.values), np.int64))
