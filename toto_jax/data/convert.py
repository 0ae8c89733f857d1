"""Conversion of CSV series directories to the Parquet pretraining layout.

Output rows: ``item_id`` (CSV path relative to the input directory, without
suffix), ``start`` (timestamp of the first row, may be null), ``freq`` (pandas
offset alias of the median step, may be null) and ``target``
(``list<float32>``; ``list<list<float32>>`` when any file has several value
columns). Files that cannot be used are skipped and reported, following the
bad-data policy of docs/data.md.
"""

from __future__ import annotations

import logging
import os
import pathlib

from toto_jax import storage
from toto_jax.data import quality, sources
from toto_jax.data.quality import DataError

logger = logging.getLogger("toto_jax.data")


def convert_csv_directory(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    rows_per_group: int = 64,
    rows_per_file: int = 10_000,
) -> dict:
    """Converts every CSV under ``input_dir`` into Parquet files in ``output_dir``.

    Small row groups keep random access cheap for the lazy Parquet source. ``output_dir`` may be a ``gs://``
    or ``s3://`` URL (``toto-jax[cloud]``); its bucket is checked before any CSV is read.
    Returns {"series": written rows, "files": written paths, "skipped": {path: reason}}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows_per_group <= 0 or rows_per_file <= 0:
        raise DataError("rows_per_group and rows_per_file must be positive")
    input_dir = pathlib.Path(input_dir)
    csv_files = sources._list_files(input_dir, (".csv",))
    storage.check_access(output_dir)
    output_dir = storage.as_path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log = quality.BadDataLog(str(input_dir))

    rows, skipped = [], {}
    for path in csv_files:
        relative = pathlib.Path(path).relative_to(input_dir) if input_dir.is_dir() else pathlib.Path(path).name
        try:
            series = sources.read_csv_series(path)
        except Exception as error:
            skipped[path] = f"{type(error).__name__}: {error}"
            log.record("unreadable_csv", f"{path}: {skipped[path]}")
            continue
        target = quality.clean_target(series["target"], log, path)
        if target is None:
            skipped[path] = "no usable values"
            continue
        rows.append(
            {
                "item_id": str(pathlib.PurePosixPath(relative).with_suffix("")),
                "start": series["start"],
                "freq": series["freq"],
                "target": target,
            }
        )
    if not rows:
        raise DataError(f"no usable CSV series under {input_dir} (skipped: {skipped})")

    multivariate = any(row["target"].shape[0] > 1 for row in rows)
    value_type = pa.list_(pa.list_(pa.float32())) if multivariate else pa.list_(pa.float32())
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("start", pa.timestamp("ns")),
            ("freq", pa.string()),
            ("target", value_type),
        ]
    )
    written = []
    for file_number, first in enumerate(range(0, len(rows), rows_per_file)):
        chunk = rows[first : first + rows_per_file]
        # NaN (missing) is stored as NaN rather than null: simpler for readers.
        targets = [
            [list(map(float, variate)) for variate in row["target"]] if multivariate else row["target"][0].tolist()
            for row in chunk
        ]
        table = pa.table(
            {
                "item_id": [row["item_id"] for row in chunk],
                "start": [None if row["start"] is None else row["start"].to_datetime64() for row in chunk],
                "freq": [row["freq"] for row in chunk],
                "target": targets,
            },
            schema=schema,
        )
        path = output_dir / f"part-{file_number:05d}.parquet"
        with path.open("wb") as stream:
            pq.write_table(table, stream, row_group_size=rows_per_group)
        written.append(str(path))
    logger.info("converted %d series from %s into %d Parquet file(s)", len(rows), input_dir, len(written))
    return {"series": len(rows), "files": written, "skipped": skipped}

