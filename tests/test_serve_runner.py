"""The server's listening socket: accepted connections must have TCP_NODELAY (keep-alive clients otherwise wait
for a delayed ACK, about 40 ms, on every response written in two parts)."""

from __future__ import annotations

import asyncio
import socket

from xclip_search.serve.runner import bind_socket


def test_accepted_connections_have_tcp_nodelay() -> None:
    listening = bind_socket("127.0.0.1", 0)
    seen: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listening)
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen and seen[0] != 0
