"""Known future covariates (the reference's ``future_exogenous_variables``), shared by both model families.

The covariates are the last ``n_exog`` variates of every series; their known values over the horizon come
as [n_exog, horizon] (every series) or [batch, n_exog, horizon]. They are checked by name, brought into the
space the model computes in (the options' per-variate normalisation) and placed after each series' own
trailing gap, whose steps are forecast before the known horizon starts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .inputs import ForecastError


@dataclasses.dataclass(frozen=True)
class KnownFuture:
    values: np.ndarray  # [batch, n_exog, horizon] float64, model space
    targets: int  # the variates forecast; covariates are variates targets ... variate - 1

    @property
    def count(self) -> int:
        return self.values.shape[1]

    def place(self, steps: int, trailing: np.ndarray):
        """[batch, n_exog, steps] values and their mask, each series' horizon starting after its trailing gap."""
        batch, count, horizon = self.values.shape
        values = np.zeros((batch, count, steps), np.float32)
        known = np.zeros(values.shape, bool)
        for row, gap in enumerate(trailing):
            values[row, :, gap : gap + horizon] = self.values[row]
            known[row, :, gap : gap + horizon] = True
        return values, known


def known_future(future, prepared, horizon: int) -> KnownFuture:
    """Check ``future_exogenous_variables`` against the prepared series and map them to model space."""
    batch, variates = prepared.values.shape[:2]
    future = np.asarray(future, np.float64)
    if future.ndim == 2:
        future = np.broadcast_to(future, (batch, *future.shape))
    if future.ndim != 3 or future.shape[0] != batch:
        raise ForecastError(
            f"future_exogenous_variables must have shape [n_exog, horizon] or [batch={batch}, n_exog, horizon], "
            f"got {np.shape(future)}"
        )
    count = future.shape[1]
    if not 0 < count < variates:
        raise ForecastError(f"future_exogenous_variables has {count} covariates; the series have {variates} variates, "
                            "of which the last n_exog are the covariates and at least one is forecast")  # fmt: skip
    if future.shape[2] < horizon:
        raise ForecastError(f"future_exogenous_variables cover {future.shape[2]} steps, shorter than the horizon ({horizon})")
    targets = variates - count
    future = future[..., :horizon]
    missing = np.argwhere(~np.isfinite(future))
    if missing.size:
        series, covariate, step = (int(x) for x in missing[0])
        raise ForecastError(f"series {series}, covariate {covariate} (variate {targets + covariate}): "
                            f"future value at step {step} is not finite")  # fmt: skip
    values = (future - prepared.shift[:, targets:]) / prepared.unit[:, targets:]
    beyond = np.argwhere(np.abs(values) > np.finfo(np.float32).max / 2)
    if beyond.size:
        series, covariate, step = (int(x) for x in beyond[0])
        raise ForecastError(f"series {series}, covariate {covariate} (variate {targets + covariate}): future value "
                            f"{future[series, covariate, step]:.3g} at step {step} is beyond the float32 range")  # fmt: skip
    return KnownFuture(values, targets)


def target_index(index, targets: int):
    """A pandas input's time indexes without the covariate columns (forecasts cover the targets only)."""
    if index is None:
        return None
    return [dataclasses.replace(ix, variates=ix.variates[:targets]) for ix in index]


def lead_covariates(values: np.ndarray, future: np.ndarray | None, patch: int):
    """Covariates moved one patch earlier in time: step t holds the value of step t + patch.

    Toto decodes patch k + 1 from the tokens up to patch k, so a covariate's known value for patch k + 1
    is only seen in time if it sits at patch k (the reference's fine-tuning and fev evaluation shift
    covariates this way). ``toto-jax finetune`` trains with led covariates and ``toto-jax forecast
    --covariates`` leads them the same way; a model fine-tuned so expects them in the Python API too.

    values [..., n_exog, time] (the context), future [..., n_exog, horizon] (known values after it, or
    None while training). Returns both, led; the last ``patch`` steps, beyond what is known, repeat the
    last known value (they only feed patches after the horizon or the last, never fed back, patch).
    """
    values = np.asarray(values)
    time = values.shape[-1]
    known = values if future is None else np.concatenate([values, np.asarray(future, values.dtype)], axis=-1)
    held = np.repeat(known[..., -1:], patch, axis=-1)
    led = np.concatenate([known, held], axis=-1)[..., patch:]
    return led[..., :time], (None if future is None else led[..., time:])


def lead_series_covariates(series: np.ndarray, count: int, patch: int, future: np.ndarray | None = None):
    """One series [variate, time] whose last ``count`` variates are covariates, with those led one patch
    (``lead_covariates``), and their led future values (None without ``future``)."""
    context, ahead = lead_covariates(series[-count:], future, patch)
    return np.concatenate([series[:-count], context]), ahead
