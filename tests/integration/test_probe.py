"""The hostile black-box probe (checks/probe.py) against the real app: every route, garbage in.

The same script runs by hand (`python -m checks.probe --url ... --data-dir ...`) and makes the
table in bench/RESULTS.md; here it must find no 5xx, no traceback or internal error text, no file
outside the data folder and no unescaped injected markup.
"""

from __future__ import annotations

from pathlib import Path

from checks.probe import run_probe


def test_hostile_probe_finds_nothing(live_app, capfd, caplog):
    data_dir = Path(live_app.data_dir).resolve()
    assert (data_dir / "downloads").is_dir(), data_dir
    report = run_probe(live_app.url, str(data_dir), max_seconds=150)
    text = "\n\n".join(
        [report.summary_table(), report.route_table(), "Failing cases:\n" + report.failing_text()]
    )
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
    # Nor in the log: expected refusals are one line each, never a traceback.
    traced = [r.getMessage()[:200] for r in caplog.records if r.exc_info]
    err = capfd.readouterr().err
    assert not traced and "Traceback" not in err, (traced, err[-3000:])
