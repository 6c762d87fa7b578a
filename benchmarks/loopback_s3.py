"""An S3 endpoint on loopback for the benchmarks: moto's server, in this process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def loopback_s3() -> Iterator[str]:
    """Start moto on a free loopback port and point s3fs (and Dask workers started later)
    at it through the environment; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "SRCNN_S3_ENDPOINT_URL": endpoint})
        yield endpoint
    finally:
        server.stop()
