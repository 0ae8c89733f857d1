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

from typing import Any, NamedTuple

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
    """First-fit packing of group windows into samples of V variate slots.

    Each sample starts with the oldest waiting group, then repeatedly takes the
    first of the next ``lookahead`` groups (in stream order) that fits the
    remaining slots; it is emitted when none fits or it is full. ``lookahead=1``
    is plain in-order packing. ``None`` elements (series skipped by the bad-data
    policy) are dropped; too many in a row means a source has no usable data
    and raises ``DataError``.
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        num_variates: int,
        window_length: int,
        lookahead: int = 8,
        include_provenance: bool = False,
        max_consecutive_skips: int = 10_000,
    ):
        super().__init__(parent)
        if lookahead < 1:
            raise DataError(f"packing lookahead must be >= 1, got {lookahead}")
        self.num_variates = int(num_variates)
        self.window_length = int(window_length)
        self.lookahead = int(lookahead)
        self.include_provenance = include_provenance
        self.max_consecutive_skips = int(max_consecutive_skips)

    def __iter__(self) -> "PackVariatesIterator":
        return PackVariatesIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"PackVariatesIterDataset(num_variates={self.num_variates}, lookahead={self.lookahead})"


class _Waiting(NamedTuple):
    offset: int  # parent elements fetched since the anchor before this one
    state_before: dict[str, Any]  # parent state just before fetching it
    group: dict[str, Any]


class PackVariatesIterator(grain.DatasetIterator):
    """Iterator of ``PackVariatesIterDataset``.

    Its state is the parent state before the oldest group not yet emitted (the
    anchor) plus the offsets, counted from the anchor, of the groups already
    emitted after it. Restoring replays the parent from the anchor and skips
    those offsets, which rebuilds exactly the same waiting groups.
    """

    def __init__(self, parent: grain.DatasetIterator, config: PackVariatesIterDataset):
        super().__init__(parent)
        self._config = config
        self._anchor_state: dict[str, Any] | None = None  # None: nothing fetched since re-anchoring
        self._fetched = 0
        self._emitted: set[int] = set()
        self._waiting: list[_Waiting] = []

    def _refill(self) -> None:
        skipped = 0
        while len(self._waiting) < self._config.lookahead:
            state = self._parent.get_state()
            try:
                element = next(self._parent)
            except StopIteration:
                return
            if self._anchor_state is None:
                self._anchor_state = state
            offset = self._fetched
            self._fetched += 1
            if offset in self._emitted:  # replaying after set_state
                continue
            if element is None:
                skipped += 1
                if skipped >= self._config.max_consecutive_skips:
                    raise DataError(
                        f"{skipped} consecutive series were skipped as bad data; a data source "
                        "seems to contain no usable series (see the 'toto_jax.data' warnings)"
                    )
                continue
            skipped = 0
            if element["values"].shape[0] > self._config.num_variates:
                raise DataError(
                    f"group with {element['values'].shape[0]} variates exceeds V={self._config.num_variates}"
                )
            self._waiting.append(_Waiting(offset, state, element))

    def _reanchor(self) -> None:
        """Moves the anchor to the oldest waiting group, forgetting what precedes it."""
        if not self._waiting:
            self._anchor_state, self._fetched, self._emitted = None, 0, set()
            return
        base = self._waiting[0].offset
        self._anchor_state = self._waiting[0].state_before
        self._fetched -= base
        self._emitted = {offset - base for offset in self._emitted if offset > base}
        self._waiting = [entry._replace(offset=entry.offset - base) for entry in self._waiting]

    def __next__(self) -> dict[str, np.ndarray]:
        num_variates = self._config.num_variates
        groups: list[dict[str, Any]] = []
        used = 0
        while used < num_variates:
            self._refill()
            free = num_variates - used
            choice = next((i for i, entry in enumerate(self._waiting) if entry.group["values"].shape[0] <= free), None)
            if choice is None:
                break
            entry = self._waiting.pop(choice)
            self._emitted.add(entry.offset)
            groups.append(entry.group)
            used += entry.group["values"].shape[0]
        if not groups:
            raise StopIteration
        self._reanchor()
        return pack_groups(groups, num_variates, self._config.window_length, self._config.include_provenance)

    def get_state(self) -> dict[str, Any]:
        if self._anchor_state is None:
            return {"parent": self._parent.get_state(), "emitted": []}
        return {"parent": self._anchor_state, "emitted": sorted(self._emitted)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._anchor_state = state["parent"]
        self._fetched = 0
        self._emitted = set(state["emitted"])
        self._waiting = []

    def __str__(self) -> str:
        return f"PackVariatesIterator(num_variates={self._config.num_variates})"
