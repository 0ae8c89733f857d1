"""Training metrics: a JSONL file and TensorBoard event files (written directly, no TensorFlow needed).

In a ``gs://`` run directory, where objects cannot be appended to, both files are written locally and
uploaded whole at most every ``UPLOAD_SECONDS`` and when the run stops.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Mapping

from .. import storage

UPLOAD_SECONDS = 30.0

# ---- TensorBoard event files: TFRecord framing of hand-encoded ``Event`` protocol buffers ------------


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, scalars: Mapping[str, float] | None = None, file_version=None) -> bytes:
    """``tensorflow.Event``: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    event = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step & (2**64 - 1))
    if file_version is not None:
        event += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", float(value)))
            for tag, value in scalars.items()
        )
        event += _length_delimited(5, values)
    return event


def frame_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def read_records(path: str | Path) -> list[bytes]:
    """TFRecord payloads of a file, checking both checksums (for tests and tooling)."""
    raw = storage.as_path(path).read_bytes()
    records, offset = [], 0
    while offset < len(raw):
        header = raw[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[offset + 8 : offset + 12])
        data = raw[offset + 12 : offset + 12 + length]
        (data_crc,) = struct.unpack("<I", raw[offset + 12 + length : offset + 16 + length])
        if header_crc != masked_crc32c(header) or data_crc != masked_crc32c(data):
            raise ValueError(f"corrupt record at byte {offset} of {path}")
        records.append(data)
        offset += 16 + length
    return records


class AppendFile:
    """A file opened for appending, locally or in an object store (a local copy uploaded by ``flush``)."""

    def __init__(self, path, mode: str):
        self.path = path
        self.remote = storage.is_remote(path)
        if not self.remote:
            self.file = open(path, mode)
            return
        import tempfile

        self.scratch = tempfile.TemporaryDirectory(prefix="toto-jax-metrics-")
        self.local = Path(self.scratch.name) / path.name
        if path.exists():  # a resumed run appends to what the previous one uploaded
            self.local.write_bytes(path.read_bytes())
        self.file = open(self.local, mode)
        self.uploaded_at = time.monotonic()

    def write(self, data) -> None:
        self.file.write(data)
        self.flush()

    def flush(self, force: bool = False) -> None:
        self.file.flush()
        if self.remote and (force or time.monotonic() - self.uploaded_at >= UPLOAD_SECONDS):
            storage.filesystem(self.path).put_file(str(self.local), str(self.path))
            self.uploaded_at = time.monotonic()

    def close(self) -> None:
        self.flush(force=True)
        self.file.close()
        if self.remote:
            self.scratch.cleanup()


class EventWriter:
    def __init__(self, directory):
        directory = storage.as_path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.file = AppendFile(directory / name, "ab")
        self.file.write(frame_record(encode_event(time.time(), 0, file_version="brain.Event:2")))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.file.write(frame_record(encode_event(time.time(), step, scalars=values)))

    def close(self) -> None:
        self.file.close()


class MetricsLogger:
    """Appends ``{"step": n, ...}`` lines to ``metrics.jsonl`` and, optionally, TensorBoard scalars."""

    def __init__(self, workdir, tensorboard: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.events = None
        if not enabled:
            return
        workdir = storage.as_path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.jsonl = AppendFile(workdir / "metrics.jsonl", "a")
        if tensorboard:
            self.events = EventWriter(workdir / "tensorboard")

    def write(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        if self.events is not None:
            self.events.scalars(step, {f"train/{k}": v for k, v in values.items()})

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.events is not None:
            self.events.close()


def read_jsonl(path: str | Path) -> list[dict]:
    with storage.as_path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
