"""Weight tables: a torch key pattern plus the transforms between its tensor and the parameter arrays.

Each family's layout (``toto1_layout``, ``toto2_layout``) is a table of ``Rule`` rows; each row knows both
directions, so loading and exporting share one definition and round trips are bit exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np


def concat(parts, axis):
    return np.concatenate(parts, axis) if isinstance(parts[0], np.ndarray) else jax.numpy.concatenate(parts, axis)


@dataclass(frozen=True)
class Rule:
    """``torch`` suffix -> parameter paths (relative to the module or layer), with both transforms."""

    torch_suffix: str
    targets: tuple[str, ...]
    to_jax: Callable  # (tensor, config) -> tuple of arrays, one per target
    to_torch: Callable  # (arrays tuple, config) -> tensor


def plain(to_jax, to_torch):
    return (lambda t, c: (to_jax(t),)), (lambda a, c: to_torch(a[0]))


IDENTITY = plain(lambda t: t, lambda a: a)
LINEAR = plain(lambda w: w.T, lambda k: k.T)  # torch Linear.weight is (out, in); kernels are (in, out)


@dataclass(frozen=True)
class Layout:
    """How one model family's parameters appear in its reference's ``model.safetensors``."""

    prefix: str  # on every torch key
    rules: Callable[[Any], dict[str, tuple[Rule, int | None]]]  # config -> {key without prefix: (rule, layer)}
    layer_path: Callable[[Any, int, str], tuple[tuple, int]]  # (config, layer, target) -> (path, stacked index)
    canonical: Callable[[str], str] = lambda key: key  # aliases -> the key ``rules`` uses
    ignored: re.Pattern = re.compile(r"$^")  # keys present in checkpoints that hold no parameter


def path(dotted: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))
