"""``ansflow serve --workers N``: the socket its processes share."""

from __future__ import annotations

import asyncio
import socket

from ansflow.cli.serving import APP, TcpConfig


async def test_the_shared_socket_answers_without_waiting_for_acks() -> None:
    """Connections accepted on it get ``TCP_NODELAY`` from asyncio, as with one process;
    without it, every answer waited ~40 ms for the client's delayed ACK."""
    listener = TcpConfig(APP, factory=True, host="127.0.0.1", port=0, workers=2).bind_socket()
    accepted: asyncio.Queue[int] = asyncio.Queue()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.put_nowait(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        nodelay = await asyncio.wait_for(accepted.get(), 10)
        writer.close()
    assert nodelay != 0
