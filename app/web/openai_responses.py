"""Responses of the OpenAI-compatible routes (app/web/openai_api.py): one or more generations
(choices: several prompts, or `n`), each fed by a producer thread of its own, answered as one
JSON body or as one server-sent event stream (shapes in app/web/openai_shapes.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.services.playground import Output
from app.web.guard import ClientGone
from app.web.openai_shapes import ChoiceStream, complete_body, usage
from model.engine import CancelToken
from model.errors import PlaygroundError

log = logging.getLogger(__name__)

Attribute = Callable[[Output], list]
# Reused producer threads: starting one per request cost its first token ~0.3 ms, more under
# load. Generations are bounded by the engine queue well below this; past it, refusals wait.
_PRODUCERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="v1-stream")


async def respond(
    request: Request,
    runs: Sequence[Iterator[Output]],
    cancels: Sequence[CancelToken],
    stream: bool,
    kind: str,
    echo: bool,
    attribute: Attribute | None,
) -> Response:
    """`runs`: the choices' generations, in order, each stopped by its token in `cancels` (when
    the client goes away, streamed or not). `echo`: each completion's text starts with its
    prompt (Output.prefix: the text, also of a prompt sent as token ids). `attribute`: for one
    choice only."""
    rid = f"{'chatcmpl' if kind.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    pumps = [_Pump(run, token) for run, token in zip(runs, cancels, strict=True)]
    try:  # a refusal raises here: an HTTP error, before any event; the other choices stop
        firsts = [await pump.next() for pump in pumps]
        if not stream:
            finals = await _unless_gone(
                request, asyncio.gather(*(_last(p, f) for p, f in zip(pumps, firsts, strict=True)))
            )
    except BaseException as exc:
        for pump in pumps:
            pump.stop()
        if isinstance(exc, ClientGone):  # nobody to answer: nginx's "client closed request"
            log.info("a /v1 client went away before its answer; %d choices stopped", len(pumps))
            return Response(status_code=499)
        raise
    if not stream:
        body = complete_body(finals, rid, created, kind, echo)
        if attribute:
            body["attribution"] = await anyio.to_thread.run_sync(attribute, finals[0])
        return JSONResponse(body)
    choices = [ChoiceStream(i, rid, created, kind, echo) for i in range(len(pumps))]
    return StreamingResponse(
        _events(pumps, firsts, choices, attribute),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


async def _events(pumps, firsts, choices: list[ChoiceStream], attribute) -> AsyncIterator[str]:
    """The choices' chunks as their tokens come; the usage of all of them on the finish chunk
    of the last to end; then `[DONE]`."""
    finals: dict[int, Output] = {}
    try:
        for choice, first in zip(choices, firsts, strict=True):
            for event in choice.opening(first.model):
                yield event
        async for i, out in _outputs(pumps, firsts):
            extra = None
            if out.done is not None:
                finals[i] = out
                if len(finals) == len(pumps):  # the last to end
                    extra = {"usage": usage(list(finals.values()))}
                    if attribute:
                        extra["attribution"] = await anyio.to_thread.run_sync(attribute, out)
            for event in choices[i].chunks(out, extra):
                yield event
    except PlaygroundError as exc:
        yield f"data: {json.dumps(exc.openai_body())}\n\n"
    finally:
        for pump in pumps:
            pump.stop()
    yield "data: [DONE]\n\n"


async def _outputs(pumps, firsts) -> AsyncIterator[tuple[int, Output]]:
    """(choice, Output) as they come, each choice up to its final Output; raises the first
    PlaygroundError of any choice."""
    if len(pumps) == 1:  # the common case: no task and no second queue per token
        async for out in _read(pumps[0], firsts[0]):
            yield 0, out
        return
    merged: asyncio.Queue = asyncio.Queue()

    async def follow(i: int) -> None:
        try:
            async for out in _read(pumps[i], firsts[i]):
                await merged.put((i, out))
        except PlaygroundError as exc:
            await merged.put((i, exc))
        await merged.put((i, None))

    tasks = [asyncio.create_task(follow(i)) for i in range(len(pumps))]
    try:
        ended = 0
        while ended < len(pumps):
            i, item = await merged.get()
            if isinstance(item, PlaygroundError):
                raise item
            if item is None:
                ended += 1
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


async def _unless_gone(request: Request, work: asyncio.Future):
    """`work`'s result, or ClientGone as soon as the client disconnects. A non-streamed request
    of `n: 16, max_tokens: 1000` used to generate on for minutes after its client had gone,
    holding 8 batch slots and the queue behind them."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        work.cancel()
        # Retrieve what the cancelled gather ends with, or asyncio logs it as never retrieved.
        work.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise ClientGone
    return work.result()


async def _last(pump: _Pump, first: Output | None) -> Output | None:
    """The final Output, reading on from `first` (every run ends with one)."""
    out = first
    async for out in _read(pump, first):  # noqa: B007 - the last one is the answer
        pass
    return out


async def _read(pump: _Pump, first: Output | None) -> AsyncIterator[Output]:
    out = first
    while out is not None:
        yield out
        if out.done is not None:
            return
        out = await pump.next()


class _Pump:
    """A generation's Outputs, produced by one thread of its own and read by the event loop.

    A thread hop per token (to_thread for each next()) took 8 streams to 3.3x where the engine
    alone does 5.1x; here the loop takes whatever arrived since it last looked, as one event.
    """

    def __init__(self, run: Iterator[Output], cancel: CancelToken):
        self._cancel = cancel
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._held: tuple | None = None
        self._stop = threading.Event()
        _PRODUCERS.submit(self._produce, run)

    def _produce(self, run: Iterator[Output]) -> None:
        put = self._queue.put_nowait
        try:
            for out in run:
                self._loop.call_soon_threadsafe(put, ("out", out))
                if self._stop.is_set():
                    break
        except Exception as exc:  # handed to the reader, who raises it
            self._loop.call_soon_threadsafe(put, ("err", exc))
        finally:
            run.close()  # a client that went away: this cancels its request at the next step
            self._loop.call_soon_threadsafe(put, ("end", None))

    async def next(self) -> Output | None:
        """The latest Output (None at the end); raises what the generation raised."""
        item = self._held or await self._queue.get()
        self._held = None
        while item[0] == "out" and not item[1].done and not self._queue.empty():
            following = self._queue.get_nowait()
            if following[0] != "out":
                self._held = following
                break
            item = ("out", following[1].after(item[1]))  # one event, every delta in it
        if item[0] == "err":
            raise item[1]
        return item[1]

    def stop(self) -> None:
        """Stop the generation within a decode step (or a queue poll, if it still waits)."""
        self._stop.set()
        self._cancel.cancel("the client went away")
