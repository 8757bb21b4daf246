"""uvicorn with the service's shutdown sequence: on SIGTERM readiness turns false and every request gets 503 with
`Connection: close` for ``drain_s`` seconds (load balancers stop routing, keep-alive clients move away), then
uvicorn's graceful shutdown finishes the in-flight requests and the batcher drains its queue."""
from __future__ import annotations

import json
import logging
import threading

import uvicorn

from .app import ServeConfig, create_app

log = logging.getLogger("rednet.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service, drain_s: float):
        super().__init__(config)
        self.service, self.drain_s = service, drain_s

    def handle_exit(self, sig, frame) -> None:
        if self.service.draining:  # a second signal: stop draining, shut down now
            return super().handle_exit(sig, frame)
        self.service.draining = True
        log.info(json.dumps({"event": "draining", "seconds": self.drain_s}))
        timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                host = f"[{host}]" if ":" in host else host
                log.info(json.dumps({"event": "listening", "url": f"http://{host}:{port}"}))


def serve(config: ServeConfig, grace_s: float) -> None:
    app = create_app(config)
    server = DrainingServer(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           timeout_graceful_shutdown=grace_s, access_log=False),
                            app.state.service, config.drain_s)
    server.run()
