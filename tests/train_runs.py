"""Helpers shared by the tests that launch training runs as subprocesses."""

from __future__ import annotations

from pathlib import Path


def finished_steps(workdir: Path) -> list[int]:
    """Steps of the run's complete checkpoints (orbax writes the metadata file last)."""
    root = workdir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists())
