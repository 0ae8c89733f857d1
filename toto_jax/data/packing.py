"""Random windows of single series and packing of several series into V variate slots.

Sample layout (numpy, per sample; the batch adds a leading B axis):

* ``series``       float32 [V, W]  values, 0 where padded or missing
* ``padding_mask`` bool    [V, W]  True where the value is real
* ``id_mask``      int32   [V, W]  one id per packed series group, constant in time;
  unused slots get their own ids so variate attention never mixes anything

with ``W = context_length + patch_size``: the trainer feeds ``series[..., :T]``
and predicts ``series[..., patch:]`` (the input shifted by one patch).
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from toto_jax.data.quality import DataError

# A window with no real value is redrawn this many times before being kept.
_WINDOW_RETRIES = 3


def random_window(target: np.ndarray, window_length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random window of a [v, L] float32 series with NaN = missing.

    Series shorter than the window are left-padded (value 0, mask False), so the
    most recent values sit at the end like at inference time. Returns
    (values float32 [v, W], padding_mask bool [v, W]).
    """
    num_variates, length = target.shape
    if length >= window_length:
        for _ in range(_WINDOW_RETRIES):
            start = int(rng.integers(0, length - window_length + 1))
            window = target[:, start : start + window_length]
            if not np.isnan(window).all():
                break
    else:
        window = np.full((num_variates, window_length), np.nan, dtype=np.float32)
        window[:, window_length - length :] = target
    mask = ~np.isnan(window)
    return np.where(mask, window, np.float32(0)).astype(np.float32), mask


class WindowTransform(grain.transforms.RandomMap):
    """Record -> group window, keeping at most ``max_variates`` random variates."""

    def __init__(self, window_length: int, max_variates: int):
        self.window_length = int(window_length)
        self.max_variates = int(max_variates)

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        target = element["target"]
        if target.shape[0] > self.max_variates:
            keep = np.sort(rng.choice(target.shape[0], size=self.max_variates, replace=False))
            target = target[keep]
        values, mask = random_window(target, self.window_length, rng)
        return {
            "values": values,
            "mask": mask,
            "source_index": int(element.get("source_index", 0)),
            "series_index": int(element["series_index"]),
        }


def pack_groups(
    groups: list[dict[str, Any]], num_variates: int, window_length: int, include_provenance: bool = False
) -> dict[str, np.ndarray]:
    """Stacks group windows into the V variate slots of one sample."""
    series = np.zeros((num_variates, window_length), dtype=np.float32)
    padding_mask = np.zeros((num_variates, window_length), dtype=bool)
    slot_ids = np.empty(num_variates, dtype=np.int32)
    source_index = np.full(num_variates, -1, dtype=np.int32)
    series_index = np.full(num_variates, -1, dtype=np.int64)
    slot = 0
    for group_id, group in enumerate(groups):
        count = group["values"].shape[0]
        series[slot : slot + count] = group["values"]
        padding_mask[slot : slot + count] = group["mask"]
        slot_ids[slot : slot + count] = group_id
        source_index[slot : slot + count] = group["source_index"]
        series_index[slot : slot + count] = group["series_index"]
        slot += count
    # Each unused slot is its own group: nothing real attends to it.
    slot_ids[slot:] = len(groups) + np.arange(num_variates - slot, dtype=np.int32)
    sample = {
        "series": series,
        "padding_mask": padding_mask,
        "id_mask": np.repeat(slot_ids[:, None], window_length, axis=1),
    }
    if include_provenance:
        sample["source_index"] = source_index
        sample["series_index"] = series_index
    return sample


class PackVariatesIterDataset(grain.IterDataset):
    """Greedy in-order packing of group windows into samples of V variate slots.

    Groups are taken in stream order; when the next group does not fit in the
    remaining slots the sample is emitted and that group starts the next one.
    ``None`` elements (series skipped by the bad-data policy) are dropped; too
    many in a row means a source has no usable data and raises ``DataError``.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        num_variates: int,
        window_length: int,
        include_provenance: bool = False,
        max_consecutive_skips: int = 10_000,
    ):
        super().__init__(parent)
        self.num_variates = int(num_variates)
        self.window_length = int(window_length)
        self.include_provenance = include_provenance
        self.max_consecutive_skips = int(max_consecutive_skips)

    def __iter__(self) -> "PackVariatesIterator":
        return PackVariatesIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"PackVariatesIterDataset(num_variates={self.num_variates})"


class PackVariatesIterator(grain.DatasetIterator):
    """Iterator of ``PackVariatesIterDataset``; its state is the parent's state
    just before the first group not yet emitted, so restoring replays exactly."""

    def __init__(self, parent: grain.DatasetIterator, config: PackVariatesIterDataset):
        super().__init__(parent)
        self._config = config
        self._pending: dict[str, Any] | None = None
        self._state_before_pending: dict[str, Any] | None = None

    def _next_group(self) -> dict[str, Any] | None:
        """Next usable group from the parent, None at the end of the stream."""
        skipped = 0
        while True:
            try:
                element = next(self._parent)
            except StopIteration:
                return None
            if element is not None:
                return element
            skipped += 1
            if skipped >= self._config.max_consecutive_skips:
                raise DataError(
                    f"{skipped} consecutive series were skipped as bad data; a data source "
                    "seems to contain no usable series (see the 'toto_jax.data' warnings)"
                )

    def __next__(self) -> dict[str, np.ndarray]:
        num_variates = self._config.num_variates
        groups: list[dict[str, Any]] = []
        used = 0
        while True:
            if self._pending is not None:
                group, self._pending = self._pending, None
            else:
                state = self._parent.get_state()
                group = self._next_group()
                if group is None:
                    break
                if group["values"].shape[0] > num_variates:
                    raise DataError(f"group with {group['values'].shape[0]} variates exceeds V={num_variates}")
                if used + group["values"].shape[0] > num_variates:
                    self._pending, self._state_before_pending = group, state
                    break
            groups.append(group)
            used += group["values"].shape[0]
            if used == num_variates:
                break
        if not groups:
            raise StopIteration
        return pack_groups(groups, num_variates, self._config.window_length, self._config.include_provenance)

    def get_state(self) -> dict[str, Any]:
        if self._pending is not None:
            return {"parent": self._state_before_pending}
        return {"parent": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._pending = None
        self._state_before_pending = None

    def __str__(self) -> str:
        return f"PackVariatesIterator(num_variates={self._config.num_variates})"
