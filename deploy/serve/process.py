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
from pathlib import Path

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

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process under it (its worker processes)."""
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        tree, frontier = {self.proc.pid}, [self.proc.pid]
        while frontier:
            children = [pid for pid, ppid in parents.items() if ppid == frontier[-1] and pid not in tree]
            frontier.pop()
            tree.update(children)
            frontier.extend(children)
        total = 0
        for pid in tree:
            with contextlib.suppress(OSError, StopIteration):
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
                total += int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024
        return total

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
