"""JAX's persistent compilation cache: compiled programs kept in a directory (local, gs:// or s3://) so that
a restart, a preempted job's successor or another host of the same job loads them instead of compiling."""

from __future__ import annotations

import jax

from . import storage


def enable_compilation_cache(directory: str) -> None:
    """Cache every compiled program under ``directory``, whatever its compile time or size.

    JAX's defaults skip programs that compile in under a second, which on a restart are the many small
    ones (initialisation, data placement) that together still cost seconds.
    """
    storage.check_access(directory)
    if not storage.is_remote(directory):
        directory = str(storage.as_path(directory).absolute())
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
