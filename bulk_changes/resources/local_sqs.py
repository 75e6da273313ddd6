"""A local SQS-compatible server (moto's) for the embedded default and the tests.

The project talks to it with the same boto3 code as to Amazon SQS: only ``endpoint_url``
and the dummy credentials differ. moto keeps its state in memory: queues and messages
are lost when the server stops.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

LOCAL_ACCESS_KEY_ID = "testing"
LOCAL_SECRET_ACCESS_KEY = "testing"
LOCAL_REGION = "us-east-1"


def local_credentials() -> dict[str, str]:
    """Config for ``SqsQueue`` against a local server (besides ``endpoint_url``)."""
    return {
        "aws_access_key_id": LOCAL_ACCESS_KEY_ID,
        "aws_secret_access_key": LOCAL_SECRET_ACCESS_KEY,
        "region_name": LOCAL_REGION,
    }


class LocalSqsServer:
    """moto's server in a thread of this process.

    ``LocalSqsServer(port=0).start()`` returns the endpoint URL (port 0: a free port).
    Every server of one process shares moto's in-memory state: use distinct queue names,
    or :meth:`reset`.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", quiet: bool = True) -> None:
        self.host = host
        self.port = port
        self.quiet = quiet
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalSqsServer is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        if self._server is not None:
            return self.endpoint_url
        from moto.server import ThreadedMotoServer

        if self.quiet:  # werkzeug logs every request on stderr
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        self.port = int(server.get_host_and_port()[1])
        return self.endpoint_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def reset(self) -> None:
        """Forget every queue and message (moto's reset endpoint)."""
        self.reset_endpoint(self.endpoint_url)

    @staticmethod
    def reset_endpoint(endpoint_url: str) -> None:
        """Reset the moto server at ``endpoint_url`` (every queue and message is lost)."""
        request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def __enter__(self) -> LocalSqsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_ready(endpoint_url: str, timeout: float = 15.0) -> None:
    """Wait until an SQS-compatible server answers HTTP at ``endpoint_url``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"no SQS server answering at {endpoint_url} after {timeout}s: {last}")


def start_local_sqs_process(
    port: int,
    log_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    timeout: float = 20.0,
) -> subprocess.Popen[bytes]:
    """Run moto's server as a separate process (own session, so it can be stopped alone);
    returns once it answers. Stop it with ``proc.terminate(); proc.wait()``."""
    with Path(log_path).open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    endpoint = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"local SQS server exited with {proc.returncode} (log: {os.fspath(log_path)})"
            )
        try:
            wait_until_ready(endpoint, timeout=0.5)
            return proc
        except TimeoutError:
            if time.monotonic() > deadline:
                proc.terminate()
                proc.wait(10)
                raise


def stop_local_sqs_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
