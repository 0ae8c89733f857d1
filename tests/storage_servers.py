"""Real object-store servers on loopback for the storage tests: Google's GCS emulator (gcp-storage-emulator)
and moto's S3 server, each in a thread of the test process, on a free port, stopped at the end.

The GCS emulator gets two fixes. ``_send_object_generations``: its media downloads lack the
``x-goog-generation`` header real GCS sends. TensorStore's GCS driver takes a read object's generation from
that header, gets 0 without it, and refuses the next read it conditions on that generation (only generations
> 0 are valid): "Malformed StorageGeneration" on every OCDBT checkpoint read. ``_store_multipart_uploads_exactly``:
it parses multipart uploads with Python's email parser, which reads a file's final ``\r`` and gcsfs's ``\n``
delimiter as one CRLF and drops the ``\r``: one small file in 256 ends in that byte (an OCDBT manifest did, and
its checkpoint failed to load). And one addition (``_refuse_anonymous_on_demand``): the emulator accepts every
request, so ``ObjectStores.private_gcs`` makes it answer requests without credentials as GCS does for a private
bucket (401), for the no-credentials tests.

``environment`` points every client at them: gcsfs and google-cloud-storage (``STORAGE_EMULATOR_HOST``),
TensorStore's GCS driver (``TENSORSTORE_GCS_HTTP_URL``, with a fixed test token instead of credentials),
s3fs / botocore and TensorStore's S3 driver (``AWS_ENDPOINT_URL`` and dummy keys, which moto accepts).
Subprocesses get it with ``env={**os.environ, **stores.environment}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.message
import logging
import os
import sys
import uuid
from typing import Iterator


@dataclasses.dataclass
class ObjectStores:
    environment: dict[str, str]
    gcs_httpd: object  # the emulator's HTTP server

    @contextlib.contextmanager
    def private_gcs(self) -> Iterator[None]:
        """While open, the GCS emulator answers requests that carry no credentials with 401, as GCS does."""
        self.gcs_httpd.refuse_anonymous = True
        try:
            yield
        finally:
            self.gcs_httpd.refuse_anonymous = False

    def new_bucket(self, scheme: str) -> str:
        """A fresh empty bucket: 'gs://NAME' or 's3://NAME'."""
        import fsspec

        name = f"toto-{uuid.uuid4().hex[:12]}"
        fsspec.filesystem(scheme).mkdir(name)
        return f"{scheme}://{name}"


def _send_object_generations() -> None:
    """Make the emulator's object downloads carry ``x-goog-generation`` / ``x-goog-metageneration``, as GCS's do."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    download = objects.download
    if getattr(download, "sends_generations", False):
        return

    def download_with_generations(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status.value in (200, 206):
            stored = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = stored["generation"]
            response["x-goog-metageneration"] = stored["metageneration"]

    download_with_generations.sends_generations = True
    objects.download = download_with_generations  # reached through objects.get (?alt=media)
    for _, handlers in server.HANDLERS:  # and directly by the /download/ routes
        for method, handler in handlers.items():
            if handler is download:
                handlers[method] = download_with_generations


def _store_multipart_uploads_exactly() -> None:
    """Take a multipart upload's file content from the raw request body, byte for byte, not from the email parser."""
    from gcp_storage_emulator import server

    read_raw, read = server._read_raw_data, server._read_data
    if getattr(read, "exact_multipart", False):
        return

    def read_raw_keeping_it(request_handler):
        request_handler.raw_body = read_raw(request_handler)
        return request_handler.raw_body

    def read_exactly(request_handler, query):
        data = read(request_handler, query)
        content_type = request_handler.headers.get("Content-Type") or ""
        if content_type.startswith("multipart/related") and isinstance(data, dict):
            body = server._decode_raw_data(request_handler.raw_body, request_handler)
            data["content"] = _multipart_file_content(body, _boundary(content_type))
        return data

    read_exactly.exact_multipart = True
    server._read_raw_data, server._read_data = read_raw_keeping_it, read_exactly


def _boundary(content_type: str) -> bytes:
    header = email.message.Message()
    header["Content-Type"] = content_type
    return header.get_param("boundary").encode()


def _multipart_file_content(body: bytes, boundary: bytes) -> bytes:
    """The second part's content (the first is the JSON metadata). Its delimiter is the line ending the client
    ends its boundary lines with (gcsfs: LF, google-cloud-storage: CRLF), so a final CR stays content."""
    part = body.split(b"--" + boundary)[2]
    newline = b"\r\n" if part.startswith(b"\r\n") else b"\n"
    content = part[len(newline) :].split(newline * 2, 1)[1]  # after the part's headers
    return content[: -len(newline)]


def _refuse_anonymous_on_demand() -> None:
    """Let ``ObjectStores.private_gcs`` make the emulator refuse requests that carry no credentials."""
    from http import HTTPStatus

    from gcp_storage_emulator import server

    handle = server.Router.handle
    if getattr(handle, "refuses_anonymous", False):
        return

    def handle_unless_anonymous(router, method):
        request_handler = router._request_handler
        anonymous = "Authorization" not in request_handler.headers
        if anonymous and getattr(request_handler.server, "refuse_anonymous", False):
            response = server.Response(request_handler)
            response.status = HTTPStatus.UNAUTHORIZED
            message = "Anonymous caller does not have storage.objects.list access to the Google Cloud Storage bucket."
            response.json({"error": {"code": 401, "message": message}})
            response.close()
            return
        handle(router, method)

    handle_unless_anonymous.refuses_anonymous = True
    server.Router.handle = handle_unless_anonymous


def _ignore_dropped_connections(httpd) -> None:
    """Clients close connections whose answer they no longer want; the server would print each broken pipe's
    traceback into the test output, where it reads like a failure."""
    report = httpd.handle_error

    def handle_error(request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            report(request, client_address)

    httpd.handle_error = handle_error


@contextlib.contextmanager
def running_object_stores() -> Iterator[ObjectStores]:
    from gcp_storage_emulator.server import create_server
    from moto.server import ThreadedMotoServer

    # both log every request at INFO
    for name in ("gcp_storage_emulator", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _send_object_generations()
    _store_multipart_uploads_exactly()
    _refuse_anonymous_on_demand()
    gcs = create_server("127.0.0.1", 0, in_memory=True)
    gcs.start()
    _ignore_dropped_connections(gcs._api._httpd)
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
        yield ObjectStores(environment, gcs._api._httpd)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3.stop()
        gcs.stop()
