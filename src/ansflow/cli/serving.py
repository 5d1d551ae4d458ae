"""``ansflow serve`` on uvicorn: one process, or several sharing one listening socket."""

from __future__ import annotations

import contextlib
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

APP = "ansflow.api.app:create_app"


class TcpConfig(uvicorn.Config):
    """uvicorn makes the socket its processes share without a protocol number, and
    asyncio sets ``TCP_NODELAY`` only on accepted sockets whose protocol says TCP: with
    Nagle's algorithm left on, every answer waited about 40 ms for the client's delayed
    ACK (``/healthz`` took 44 ms instead of 0.7). This socket says TCP."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                 fileno=sock.detach())
            sock.set_inheritable(True)
        return sock


def serve(host: str, port: int, processes: int) -> None:
    if processes == 1:
        uvicorn.run(APP, factory=True, host=host, port=port)
        return
    config = TcpConfig(APP, factory=True, host=host, port=port, workers=processes)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[config.bind_socket()]).run()
