"""PlaygroundError at the Gradio boundary: it becomes gr.Error, everything else a logged bug."""

from __future__ import annotations

import functools
import html
import inspect
import logging
from collections.abc import Callable

from model.errors import PlaygroundError

__all__ = ["PlaygroundError", "errors_in_status", "status_message", "user_errors"]

log = logging.getLogger(__name__)

INTERNAL = "Something went wrong on our side; the error was logged. Please try again."


def _translate(exc: Exception, as_html: bool):
    import gradio as gr

    if isinstance(exc, PlaygroundError):
        # Expected: one line naming the field and kind, not two tracebacks (3.5 KB of log per
        # 61-byte bad request let anyone flood the log). The message itself may be huge.
        log.info("refused: field=%s kind=%s", exc.field, exc.kind)
        # The browser's toast renders HTML: "<FILL_HERE>" would vanish as an unknown tag.
        message = html.escape(exc.message) if as_html else exc.message
        return gr.Error(message, title=_title(exc), print_exception=False)
    log.exception("unexpected error in handler", exc_info=exc)
    return gr.Error(INTERNAL, title="Internal error", print_exception=False)


def _title(exc: PlaygroundError) -> str:
    return {"validation": "Invalid input", "busy": "Busy"}.get(exc.kind, "Error")


def user_errors(fn: Callable | None = None, *, as_html: bool = False) -> Callable:
    """Wrap a Gradio handler (plain or generator) so errors reach the user as messages.

    UI handlers pass as_html=True (the toast renders HTML); API endpoints keep plain text.
    """
    import gradio as gr

    if fn is None:
        return functools.partial(user_errors, as_html=as_html)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise _translate(exc, as_html) from exc

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise _translate(exc, as_html) from exc

    return wrapper


def status_message(exc: Exception) -> str:
    """A refusal or a failure as a status line or a results box says it (HTML, which Markdown
    keeps), logged as user_errors logs it: one line for a refusal, the traceback for a bug."""
    import gradio as gr

    err = exc if isinstance(exc, gr.Error) else _translate(exc, as_html=False)
    # Escaped: "<FILL_HERE>" would vanish as an unknown tag.
    return f"<strong>{html.escape(err.title)}:</strong> {html.escape(err.message, quote=False)}"


def errors_in_status(*, outputs: int, status: int) -> Callable:
    """Wrap a page's handler (plain or generator) so an error becomes the text of one output
    (`status`, by position) and every other output keeps what it showed. Raised, a gr.Error
    put a toast in a corner and a red "Error" badge on each of the event's outputs (five, over
    the last good output), and the status line said only "Error"."""
    import gradio as gr

    def in_status(exc: Exception) -> tuple:
        frame = [gr.skip()] * outputs
        frame[status] = status_message(exc)
        return tuple(frame) if outputs > 1 else frame[0]

    def wrap(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as exc:  # status_message logs a bug's traceback
                    yield in_status(exc)

            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return in_status(exc)

        return wrapper

    return wrap
