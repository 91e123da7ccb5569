"""The hostile black-box probe (bench/probe.py) against the real app: every route, garbage in.

The same script runs by hand (`python -m bench.probe --url ... --data-dir ...`) and makes the
table in bench/RESULTS.md; here it must find no 5xx, no traceback or internal error text, no file
outside the data folder and no unescaped injected markup.
"""

from __future__ import annotations

from pathlib import Path

from bench.probe import run_probe


def data_dir_of(app) -> Path:
    """The app's --data-dir: from its settings if it keeps them, else the downloads' parent."""
    for owner in (app, getattr(app, "settings", None)):
        if owner is not None and getattr(owner, "data_dir", None):
            return Path(owner.data_dir).resolve()
    downloads = app.handlers.downloads
    if not isinstance(downloads, (str, Path)):
        downloads = next(getattr(downloads, a) for a in ("folder", "root", "path")
                         if getattr(downloads, a, None))  # fmt: skip
    return Path(downloads).resolve().parent


def test_hostile_probe_finds_nothing(live_app):
    data_dir = data_dir_of(live_app)
    assert (data_dir / "downloads").is_dir(), data_dir
    report = run_probe(live_app.url, str(data_dir), max_seconds=150)
    text = "\n\n".join([report.summary_table(), report.route_table(),
                        "Failing cases:\n" + report.failing_text()])  # fmt: skip
    print(text)
    assert report.cases_tried >= 60, text
    assert len(report.routes()) >= 15, text  # every route, not 60 variations of one
    found = {
        "status >= 500": report.server_errors,
        "traceback or internal error text": report.traces,
        "files outside the data folder": report.files_outside,
        "unescaped injected markup": report.injections,
    }
    assert found == dict.fromkeys(found, 0), text
    assert report.server_alive, text
