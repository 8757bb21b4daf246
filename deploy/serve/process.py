"""The service as a real process on loopback (used by the service tests and `make bench-serve`)."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, onnx_path, *flags, model="rednet26", env=None, threads=1, drain_s=0.3):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the server logs a JSON line per request: a file, not a pipe nobody drains (a full pipe blocks the server)
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "deploy.serve", model, "--onnx", str(onnx_path),
                                      "--port", str(self.port), "--threads", str(threads),
                                      "--drain-s", str(drain_s), *flags],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, timeout=120.0) -> "ServerProcess":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self.wait_ready()

    def __exit__(self, *exc):
        self.stop()
