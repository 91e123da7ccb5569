"""A lean HTTP/1.1 client for the load generators: one keep-alive connection per stream on
asyncio streams, JSON in, server-sent events or JSON out.

httpx's async stack spent ~0.2 ms of the load generator's one event loop on each event (0.26
cores at ~1,200 events/s; this client: 0.09 cores at ~1,600). At 8 streams a new request's
first token waited behind the other streams' events: the /v1 row read 23-26 ms where a
blocking probe beside it saw 15 ms. This reads raw chunks and splits events itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


class HttpError(RuntimeError):
    pass


class Connection:
    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base = parts.path.rstrip("/")
        self._rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def close(self) -> None:
        if self._rw is not None:
            self._rw[1].close()
            self._rw = None

    async def json(self, method: str, path: str, body: dict | None = None) -> dict:
        data = b"".join([chunk async for chunk in self._request(method, path, body)])
        return json.loads(data)

    async def events(self, method: str, path: str, body: dict | None = None):
        """Each server-sent event as (event name or None, data text)."""
        buf = b""
        async for chunk in self._request(method, path, body):
            buf += chunk
            *whole, buf = buf.split(b"\n\n")
            for raw in whole:
                name, data = None, []
                for line in raw.split(b"\n"):
                    if line.startswith(b"event:"):
                        name = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        data.append(line[5:].lstrip().decode())
                if data:
                    yield name, "\n".join(data)

    async def _request(self, method: str, path: str, body: dict | None) -> AsyncIterator[bytes]:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {self.base}/{path.lstrip('/')} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        for fresh in (self._rw is None, True):  # an idle keep-alive may have been closed
            if self._rw is None:
                self._rw = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._rw
            writer.write(head + payload)
            status_line = await reader.readline()
            if status_line or fresh:
                break
            await self.close()
        if not status_line:
            raise HttpError("the server closed the connection")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        chunks, finished = [], False
        try:
            async for chunk in self._body(reader, headers):
                if status >= 400:
                    chunks.append(chunk)
                else:
                    yield chunk
            finished = True
        finally:
            if not (finished and keep):  # left mid-response: the connection is unusable
                await self.close()
        if status >= 400:
            raise HttpError(f"HTTP {status}: {b''.join(chunks)[:300].decode(errors='replace')}")

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict) -> AsyncIterator[bytes]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
                yield (await reader.readexactly(size + 2))[:-2]
            await reader.readline()  # the empty trailer
        else:
            yield await reader.readexactly(int(headers.get("content-length", "0")))
