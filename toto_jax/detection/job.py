"""Detection as a dataset job: ``detect_dataset`` scores every series of a dataset too large for memory with the
forecast jobs' machinery (``toto_jax.forecasting.job.DatasetJob``: shards, atomic parts, resume, errors, several
processes); only what is done with each batch differs (``DetectTask``).

Each part holds one row per step of its shard's series: ``unique_id, ds, y, surprise, score, anomaly_score,
anomaly`` (``score``: the variate's own; ``anomaly_score``: its series' combined score, the same for a
univariate series; a wide file's variates are keyed ``FILE/COLUMN``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..forecasting.dataset import DEFAULT_MIN_LENGTH, DEFAULT_ROWS_PER_SHARD, DEFAULT_SERIES_PER_BATCH
from ..forecasting.job import DatasetJob, JobSummary, loaded_model, model_digest, result_options, wide_to_long
from ..forecasting.options import ForecastOptions
from .options import DetectOptions

SCORE_COLUMNS = ("surprise", "score", "anomaly_score")


def detect_dataset(model, source, output, *, options: DetectOptions | None = None,
                   forecast_options: ForecastOptions | None = None, on_error: str = "skip",
                   min_length: int = DEFAULT_MIN_LENGTH, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                   series_per_batch: int = DEFAULT_SERIES_PER_BATCH, overwrite: bool = False,
                   model_name: str | None = None, progress: bool | None = None) -> JobSummary:  # fmt: skip
    """Score every series of ``source`` into the directory ``output`` (see ``toto_jax.forecast_dataset`` for the
    source, the output directory, ``on_error``, shards, resume and processes; ``toto_jax.detect`` for
    ``options`` and ``forecast_options``)."""
    job = DatasetJob(source, output, on_error=on_error, min_length=min_length, rows_per_shard=rows_per_shard,
                     series_per_batch=series_per_batch)  # fmt: skip
    model, model_name = loaded_model(model, model_name)
    return job.run(DetectTask(model, model_name, options, forecast_options), overwrite, progress)


class DetectTask:
    """What a detection job does with each batch of series: score every step."""

    verb = "scored"

    def __init__(self, model, model_name: str, options: DetectOptions | None, forecast_options: ForecastOptions | None):
        self.model, self.model_name = model, model_name
        self.options = DetectOptions() if options is None else options
        forecast_options = ForecastOptions() if forecast_options is None else forecast_options
        self.forecast_options = forecast_options.replace(progress=False)

    def spec(self) -> dict:
        return {
            "task": "detect",
            "model": self.model_name,
            "model_digest": model_digest(self.model),
            "detect_options": dataclasses.asdict(self.options),
            "options": result_options(self.forecast_options),
        }

    def table(self, batch, file: str):
        import pandas as pd
        import pyarrow as pa

        from .api import detect

        table = batch.table
        detection = detect(self.model, table.values, timestamps=table.timestamps, options=self.options,
                           forecast_options=self.forecast_options)
        if table.layout == "long":
            lengths = [values.shape[-1] for values in table.values]
            frame = pd.DataFrame({
                "unique_id": np.repeat(np.asarray(table.names, dtype=object), lengths),
                "ds": pd.DatetimeIndex(np.concatenate([stamps.to_numpy() for stamps in table.timestamps])),
                "y": np.concatenate([values[0] for values in table.values]),
                "surprise": np.concatenate([s[0] for s in detection.surprise]),
                "score": np.concatenate([s[0] for s in detection.scores]),
                "anomaly_score": np.concatenate(detection.combined),
            })  # fmt: skip
            if table.timestamps[0].tz is not None:
                frame["ds"] = frame["ds"].dt.tz_localize("UTC").dt.tz_convert(table.timestamps[0].tz)
        else:
            (values,), (surprise,), (scores,), (combined,) = (table.values, detection.surprise, detection.scores,
                                                               detection.combined)  # fmt: skip
            wide = {"ds": table.timestamps[0]}
            for v, name in enumerate(table.names):
                wide.update({f"{name}_y": values[v], f"{name}_surprise": surprise[v], f"{name}_score": scores[v],
                             f"{name}_anomaly_score": combined})  # fmt: skip
            frame = wide_to_long(pd.DataFrame(wide), table, file, "ds", ("y",) + SCORE_COLUMNS)
        frame["anomaly"] = frame["anomaly_score"] >= self.options.threshold
        return pa.Table.from_pandas(frame, preserve_index=False)

    def empty_schema(self):
        import pyarrow as pa

        return pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("us")), ("y", pa.float64())]
                         + [(name, pa.float64()) for name in SCORE_COLUMNS] + [("anomaly", pa.bool_())])  # fmt: skip
