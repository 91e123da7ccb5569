"""kill -9 of a model worker mid-stream, through the whole app (checks/chaos.py's scenario).

tests/integration/test_worker.py kills the worker under a bare WorkerEngine. Here the streams are the app's
own (HTTP + SSE on `/gradio_api/call/complete`, as any API client sees them), so the failure has
to cross Gradio's queue: every in-flight stream must end with our message (no hang, no Gradio
null error), the worker must come back by itself, /metrics must count the restart, /healthz
must be 200 again and the next request must succeed.
"""

from __future__ import annotations

from checks.chaos import TINY, scenario_kill


def test_worker_killed_mid_stream_fails_streams_clearly_and_the_app_recovers():
    row = scenario_kill(TINY)
    assert row.ok, "\n".join(row.failures + row.result)
    assert any("restarting" in note for note in row.result), row.result
