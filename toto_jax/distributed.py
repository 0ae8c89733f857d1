"""Multi-process start-up for TPU pods, SLURM GPU clusters and explicit (local or other) clusters.

``initialize()`` is the one call every entry point makes before touching devices. It picks, in order:
1. explicit arguments;
2. ``TOTO_COORDINATOR_ADDRESS`` / ``TOTO_NUM_PROCESSES`` / ``TOTO_PROCESS_ID`` (set by ``launch/local.sh``
   or any scheduler);
3. a SLURM allocation with several tasks, or a multi-host TPU slice: JAX's own cluster auto-detection;
4. otherwise a single process, and nothing is initialised.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import numpy as np

log = logging.getLogger(__name__)

ENV_COORDINATOR = "TOTO_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "TOTO_NUM_PROCESSES"
ENV_PROCESS_ID = "TOTO_PROCESS_ID"
ENV_INIT_TIMEOUT = "TOTO_INIT_TIMEOUT"


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    source: str  # "explicit", "environment", "slurm", "tpu" or "single"
    process_index: int
    process_count: int
    local_devices: int
    global_devices: int


def _int_env(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _detect() -> tuple[str, dict]:
    if os.environ.get(ENV_COORDINATOR):
        return "environment", dict(
            coordinator_address=os.environ[ENV_COORDINATOR],
            num_processes=_int_env(ENV_NUM_PROCESSES),
            process_id=_int_env(ENV_PROCESS_ID),
        )
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return "slurm", {}
    hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1:
        return "tpu", {}
    return "single", {}


_INITIALISED: ClusterInfo | None = None


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> ClusterInfo:
    """Join the cluster this process belongs to (idempotent). Returns what was found."""
    global _INITIALISED
    if _INITIALISED is not None:
        return _INITIALISED
    if coordinator_address is not None:
        if num_processes is None or process_id is None:
            raise ValueError("coordinator_address needs num_processes and process_id too")
        source, kwargs = "explicit", dict(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    else:
        source, kwargs = _detect()
    if kwargs.get("num_processes") == 1:
        source, kwargs = "single", {}  # nothing to join
    if source != "single":
        if "num_processes" in kwargs and not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
            raise ValueError(f"process id {kwargs['process_id']} is outside 0..{kwargs['num_processes'] - 1}")
        timeout = int(os.environ.get(ENV_INIT_TIMEOUT, "300"))
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout)
    _INITIALISED = ClusterInfo(
        source=source,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        local_devices=jax.local_device_count(),
        global_devices=jax.device_count(),
    )
    log.info("cluster: %s", _INITIALISED)
    return _INITIALISED


def is_coordinator() -> bool:
    """Only process 0 writes logs, metrics and other single-writer files."""
    return jax.process_index() == 0


def host_shard(items_count: int) -> range:
    """The contiguous slice of ``items_count`` work items this process handles (for batch forecasting)."""
    index, count = jax.process_index(), jax.process_count()
    bounds = np.linspace(0, items_count, count + 1).astype(int)
    return range(bounds[index], bounds[index + 1])


def global_batch(local_batch: dict, mesh: jax.sharding.Mesh, batch_spec: jax.sharding.PartitionSpec) -> dict:
    """Assemble each host's part of a batch into global arrays sharded as ``batch_spec`` on ``mesh``."""
    sharding = jax.sharding.NamedSharding(mesh, batch_spec)
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value)) for name, value in local_batch.items()
    }


def exchange(name: str, value: str, timeout_seconds: float = 3600.0) -> list[str]:
    """Every process's ``value`` under ``name`` (a name used once per run), in process order; waits for all.

    Through the coordination service's key-value store, so no device takes part: processes that do unequal
    amounts of device work (a forecast job's shards) meet here without a collective. One process: [value]."""
    if jax.process_count() == 1:
        return [value]
    from jax._src import distributed as jax_distributed  # the client of jax.distributed.initialize

    client = jax_distributed.global_state.client
    client.key_value_set(f"toto_jax/{name}/{jax.process_index()}", value)
    timeout = int(timeout_seconds * 1000)
    return [client.blocking_key_value_get(f"toto_jax/{name}/{i}", timeout) for i in range(jax.process_count())]
