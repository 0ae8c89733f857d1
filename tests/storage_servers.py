"""Real object-store servers on loopback for the storage tests: Google's GCS emulator (gcp-storage-emulator)
and moto's S3 server, each in a thread of the test process, on a free port, stopped at the end.

``environment`` points every client at them: gcsfs and google-cloud-storage (``STORAGE_EMULATOR_HOST``),
TensorStore's GCS driver (``TENSORSTORE_GCS_HTTP_URL``, with a fixed test token instead of credentials),
s3fs / botocore and TensorStore's S3 driver (``AWS_ENDPOINT_URL`` and dummy keys, which moto accepts).
Subprocesses get it with ``env={**os.environ, **stores.environment}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
from typing import Iterator


@dataclasses.dataclass
class ObjectStores:
    environment: dict[str, str]

    def new_bucket(self, scheme: str) -> str:
        """A fresh empty bucket: 'gs://NAME' or 's3://NAME'."""
        import fsspec

        name = f"toto-{uuid.uuid4().hex[:12]}"
        fsspec.filesystem(scheme).mkdir(name)
        return f"{scheme}://{name}"


@contextlib.contextmanager
def running_object_stores() -> Iterator[ObjectStores]:
    from gcp_storage_emulator.server import create_server
    from moto.server import ThreadedMotoServer

    # both log every request at INFO
    for name in ("gcp_storage_emulator", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
    gcs = create_server("127.0.0.1", 0, in_memory=True)
    gcs.start()
    s3 = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    s3.start()
    gcs_url = f"http://127.0.0.1:{gcs._api._httpd.server_address[1]}"  # the port the OS chose
    s3_url = f"http://127.0.0.1:{s3.get_host_and_port()[1]}"
    environment = {
        "STORAGE_EMULATOR_HOST": gcs_url,
        "TENSORSTORE_GCS_HTTP_URL": gcs_url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "AWS_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        yield ObjectStores(environment)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3.stop()
        gcs.stop()
