"""Adjustments to one Blocks' queue and input checks, and two of Gradio's routes (gradio 6.31).

Each one touches a single Blocks instance, never Gradio's classes, and checks that the internal
it relies on is still there, so an upgrade fails loudly at start instead of silently.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from urllib.parse import parse_qs

import gradio as gr

from compat import require

WRITTEN_FOR = "6.31.0"

log = logging.getLogger(__name__)

BUSY_MESSAGE = (
    "The playground is busy: {waiting} requests are already waiting for the model. "
    "Please try again in a minute."
)

QUEUE_POLL_S = 0.02  # how often an idle Gradio queue looks for a new event (Gradio: 0.001)
PROGRESS_POLL_S = 0.5  # how often it looks for progress to send (Gradio: 0.01)
# What tune_queue relies on in Gradio's Queue: checked at once, so an upgrade fails at start.
_QUEUE_INTERNALS = (
    "push", "max_size", "sleep_when_free", "progress_update_sleep_when_free", "stopped",
)  # fmt: skip


def queue_stopped(blocks: gr.Blocks) -> bool:
    """Whether the Blocks' queue has stopped starting events. Gradio stops it for good when its
    processing loop ends for any reason, and then refuses every page event and API call with 503
    ("Queue is stopped.") while the rest of the server answers: /healthz reports it, so a
    supervisor or a proxy can take the replica out. (Seen once in CI: a test's process-wide
    patch of asyncio.sleep raised inside the session app's loop.)"""
    queue = getattr(blocks, "_queue", None)
    return bool(queue is not None and queue.stopped)


def tune_queue(blocks: gr.Blocks) -> None:
    require("gradio", gr.__version__, WRITTEN_FOR, __name__)
    queue = getattr(blocks, "_queue", None)
    if queue is None or not all(hasattr(queue, name) for name in _QUEUE_INTERNALS):
        raise RuntimeError(
            f"gradio {gr.__version__}: Blocks._queue changed; see compat/gradio_queue.py"
        )
    # Gradio's monitoring summary rebuilt a pandas DataFrame of up to 10,000 past events after
    # every event: 4.5-12.6 ms of CPU per request. Its endpoint is off (we serve Prometheus
    # /metrics), so nothing reads the summary; gradio's own knob
    # (GRADIO_ANALYTICS_CACHE_FREQUENCY) is read before we could set it, hence the attribute.
    queue.ANAYLTICS_CACHE_FREQUENCY = sys.maxsize
    # With nothing to start, Gradio's queue looks for work every 1 ms and for progress every
    # 10 ms (50 and 100 ms on Windows): about 870 wake-ups a second of the web process, idle or
    # not. On a small CPU each one takes a core from the worker's spinning OpenMP team
    # (model/engines/threads.py) in the middle of a step, so the served path paid for it in
    # every token: 0.69 s of web-process CPU per 192 streamed tokens, 0.20 s at these values
    # (bench/RESULTS.md, part 4). A page event now waits at most QUEUE_POLL_S to start; the
    # app reports no progress through Gradio.
    queue.sleep_when_free = QUEUE_POLL_S
    queue.progress_update_sleep_when_free = PROGRESS_POLL_S
    push = queue.push

    async def checked_push(body, *args, **kwargs):
        # What Gradio does not check itself turned into 500s (an empty session id, an unknown
        # fn_index) or into its internals' text in the error (too few values).
        problem = _body_problem(blocks, body)
        if problem:
            return False, problem, "error"
        ok, detail, state = await push(body, *args, **kwargs)
        if state == "queue_full":  # was "Queue is full. Max size is 72 and size is 72."
            detail = BUSY_MESSAGE.format(waiting=len(queue))
        return ok, detail, state

    queue.push = checked_push

    if not callable(getattr(blocks, "preprocess_data", None)):
        raise RuntimeError(f"gradio {gr.__version__}: Blocks.preprocess_data changed")
    preprocess = blocks.preprocess_data

    async def checked_preprocess(block_fn, inputs, *args, **kwargs):
        # A value no component accepts (a chat history of triples, say) raised pydantic's or
        # Gradio's own error: a traceback in the log and internals' text for the client.
        try:
            return await preprocess(block_fn, inputs, *args, **kwargs)
        except gr.Error as exc:  # a component's own check ("Value -1 is less than ...")
            log.info("refused: event=%s kind=invalid_input", block_fn.api_name or block_fn.name)
            field = _refusing_input(block_fn, inputs)
            if field and not exc.message.startswith("`"):  # say which field the value was for
                exc.message = f"`{field}`: {exc.message}"
            exc.print_exception = False
            raise
        except Exception as exc:
            name = block_fn.api_name or block_fn.name
            log.info("refused: event=%s kind=invalid_input (%s)", name, type(exc).__name__)
            field = _refusing_input(block_fn, inputs)
            which = f": `{field}` does not take the value sent" if field else ""
            raise gr.Error(
                f"The values sent for `{name}` do not fit its inputs{which} ({type(exc).__name__}).",
                title="Invalid input",
                print_exception=False,
            ) from None

    blocks.preprocess_data = checked_preprocess


# Components whose preprocess only checks and converts the value (no files, no state), so it
# can be re-run to find which one refused.
_CHECKED = (gr.Number, gr.Slider, gr.Dropdown, gr.Radio, gr.Checkbox, gr.Textbox, gr.Chatbot)


def _refusing_input(block_fn, inputs) -> str | None:
    """The label of the first input whose own check refuses its value."""
    for component, value in zip(block_fn.inputs, inputs, strict=False):
        if not isinstance(component, _CHECKED):
            continue
        try:
            component.preprocess(value)
        except Exception:
            return component.label or component.elem_id or type(component).__name__
    return None


SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _body_problem(blocks: gr.Blocks, body) -> str | None:
    session = body.session_hash  # None for /call/<api>: Gradio makes one up itself
    if session is not None and (not isinstance(session, str) or not SESSION_RE.match(session)):
        return "`session_hash` must be 1 to 128 letters, digits, '-' or '_'."
    fn = blocks.fns.get(body.fn_index) if isinstance(body.fn_index, int) else None
    if fn is None:
        return f"`fn_index` {str(body.fn_index)[:20]} is not an event of this app."
    if not isinstance(body.data, list) or len(body.data) != len(fn.inputs):
        given = len(body.data) if isinstance(body.data, list) else type(body.data).__name__
        return f"`data` must hold {len(fn.inputs)} values for this event; given: {given}."
    return None


class GradioRouteChecks:
    """ASGI middleware for two Gradio routes that fail after their response has started: an
    unknown session's event stream (the connection just drops) and an unknown API name (500)."""

    def __init__(self, app, *, blocks: gr.Blocks, prefix: str = "/gradio_api"):
        self.app = app
        self.blocks = blocks
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem:
                body = json.dumps({"error": problem[1], "kind": "not_found"}).encode()
                headers = [(b"content-type", b"application/json"),
                           (b"content-length", str(len(body)).encode())]  # fmt: skip
                await send(
                    {"type": "http.response.start", "status": problem[0], "headers": headers}
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _problem(self, scope) -> tuple[int, str] | None:
        path = scope.get("path", "").rstrip("/")
        if path == f"{self.prefix}/queue/data":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            session = (query.get("session_hash") or [""])[0]
            if session not in self.blocks._queue.pending_messages_per_session:
                return 404, "No such session: join the queue first (`session_hash`)."
        call = f"{self.prefix}/call/"
        if path.startswith(call) and scope["method"] == "GET" and path.count("/") >= 4:
            # The result stream of one call: Gradio answered 200 for an id it never issued,
            # then dropped the connection and logged "response already started".
            event_id = path.rsplit("/", 1)[1]
            queue = self.blocks._queue
            known = (
                event_id in queue.event_ids_to_events
                or event_id in queue.pending_messages_per_session
                or any(event_id in ids for ids in queue.pending_event_ids_session.values())
            )
            if not known:
                return 404, f"No call `{event_id[:60]}` is waiting: POST to the API first."
        if path.startswith(call) and scope["method"] == "POST":
            name = path[len(call) :].removeprefix("v2/")
            names = {fn.api_name for fn in self.blocks.fns.values() if fn.api_name}
            if name not in names:
                public = ", ".join(f"/{n}" for n in sorted(names) if not n.startswith("_"))
                return 404, f"No API endpoint /{name[:60]}. This app has: {public}."
        return None
