"""uvicorn on a thread of the daemon's process.

The socket is bound here, before the pipeline starts, so a port in use is a one-line error at start
and ``:0`` gives a free port to read back. uvicorn handles no signals off the main thread: the daemon
keeps its own SIGTERM/SIGINT handling and stops the server after the pipeline has drained (so event
streams get the final events), giving open streams a bounded time to close.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import uvicorn

from daemon.config.http import split_listen


class HttpServer:
    def __init__(self, app: object, listen: str, graceful_s: float = 2.0,
                 on_stop: list[Callable[[], None]] | None = None) -> None:
        self.on_stop = list(on_stop or [])
        host, port = split_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(128)
        except OSError as exc:
            self.sock.close()
            raise ValueError(f"http.listen: cannot listen on {listen}: {exc.strerror or exc}") from None
        self.sock.set_inheritable(False)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                loop="asyncio", http="h11", ws="none", timeout_graceful_shutdown=int(graceful_s),
                                timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="http",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> bool:
        """Ask uvicorn to exit; True when it did within ``timeout_s``."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        if not alive:
            self.sock.close()
        for close in self.on_stop:
            close()
        return not alive
