"""The probe's share cases: POST /api/shares, the /s/<id> pages and delete links, the `share`
API and the `/?share=` page loads, with hostile-but-valid shares for the pages to render."""

from __future__ import annotations

import contextlib
import json
from urllib.parse import quote

from checks.probe_checks import INJECT, INJECT_ATTR
from checks.probe_client import Probe


def _share_body(**over) -> dict:
    body = {"mode": "completion", "prompt": "def f(x):\n", "output": "def f(x):\n    return x\n",
            "parameters": {"temperature": 0.2}, "model": "tiny-starcoder"}  # fmt: skip
    body.update(over)
    return {k: v for k, v in body.items() if v is not _MISSING}


_MISSING = object()


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def shares_cases(p: Probe) -> dict[str, str]:
    """POST /api/shares. Returns ids of hostile-but-valid shares for the page cases."""
    route = "/api/shares"
    made: dict[str, str] = {}

    def post(
        name,
        body=None,
        *,
        content=None,
        ctype="application/json",
        headers=None,
        refuse=True,
        fld=None,
    ):
        if content is None:
            content = json.dumps(body).encode()
        hdrs = {"content-type": ctype, **(headers or {})} if ctype else dict(headers or {})
        return p.request(
            route,
            name,
            "POST",
            "api/shares",
            content=content,
            headers=hdrs,
            expect_refusal=refuse,
            field_=fld,
        )

    # Valid but hostile content first (before any rate limit): the pages render these.
    hostile = {  # name: (body, expected refusal field or None)
        "script-everywhere": (_share_body(
            prompt=f"{INJECT}{INJECT_ATTR}\n", output=f"{INJECT}{INJECT_ATTR}\nx = 1\n",
            model=INJECT, parameters={"temperature": 0.2, "language": INJECT_ATTR,
                                      "stop": [INJECT]}), None),
        "fim-out-of-range": (_share_body(mode="fim", prompt="a<FILL_HERE>b", output="ab",
                                         fim={"middle_start": -5, "middle_end": 10**9}), "fim"),
        "spans-bogus": (_share_body(spans=[{"start": 5, "end": 1, "text": INJECT,
                                            "sources": [{"repo": INJECT}]}]), "spans"),
        "spans-with-html-sources": (_share_body(output="import os\nimport sys\n", spans=[
            {"start": 0, "end": 9, "text": "import os", "sources": [
                {"repo": INJECT, "path": INJECT_ATTR, "license": INJECT, "start_line": 1,
                 "end_line": 1}]}]), None),
        "assistant-script": (_share_body(mode="assistant", prompt=INJECT, output=INJECT_ATTR),
                             None),
        "unicode": (_share_body(prompt="a\u202e\U0001F600", output="a\u202e\U0001F600b"), None),
        "NUL": (_share_body(prompt="a\x00", output="a\x00b"), "prompt"),
    }  # fmt: skip
    for name, (body, refusal) in hostile.items():
        case, resp = post(f"hostile content: {name}", body, refuse=refusal is not None, fld=refusal)
        if resp is not None and resp.status_code in (200, 201):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                made[name] = resp.json()["id"]
    case, resp = post(
        "Host: evil.example",
        _share_body(prompt="host header"),
        refuse=False,
        headers={"host": "evil.example"},
    )
    if resp is not None and "evil.example" in case.body:
        case.concerns.append("the returned links are on the Host header's evil.example")
    case, resp = post(
        "Origin: https://evil.example",
        _share_body(prompt="origin"),
        fld="origin",
        headers={"origin": "https://evil.example"},
    )
    if resp is not None and resp.headers.get("access-control-allow-origin") in (
        "*",
        "https://evil.example",
    ):
        case.concerns.append("CORS allows https://evil.example")

    post(
        "text/plain content type",
        _share_body(prompt="text/plain"),
        ctype="text/plain",
        refuse=False,
    )
    post(
        "form-encoded",
        content=b"mode=completion&prompt=x&output=y",
        ctype="application/x-www-form-urlencoded",
        fld="body|content-type",
    )
    post("no content type", content=b"", ctype=None, fld="body|content-type")
    post("empty JSON object", {}, fld="mode")
    for missing in ("mode", "prompt", "output"):
        post(f"missing {missing}", _share_body(**{missing: _MISSING}), fld=missing)
    wrong = {"number": 12345, "list": ["x"], "object": {"$ne": 1}, "null": None}
    optional = ("parameters", "model", "fim", "spans")
    for fld in ("mode", "prompt", "output", "parameters", "model", "fim", "spans"):
        for kind, value in wrong.items():
            ok_null = kind == "null" and fld in optional
            ok_obj = kind == "object" and fld in ("parameters",)
            ok_list = kind == "list" and fld == "spans"
            post(
                f"{fld} as {kind}",
                _share_body(**{fld: value}),
                refuse=not (ok_null or ok_obj or ok_list),
                fld=fld,
            )
    post(
        "parameters nested 100,000 deep",
        content=b'{"mode":"completion","prompt":"x","output":"x","parameters":'
        + nested(100_000).encode()
        + b"}",
        fld="parameters|body",
    )
    post("JSON nested 100,000 deep (array)", content=b"[" * 100_000 + b"]" * 100_000, fld="body")
    post(
        "invalid UTF-8",
        content=b'{"mode":"completion","prompt":"\xff\xfe\xc3","output":"x"}',
        fld="body",
    )
    post(
        "lone surrogate in prompt",
        content=b'{"mode":"completion","prompt":"\\ud800","output":"\\udfff"}',
        refuse=False,
    )
    post(
        "NaN in parameters",
        content=b'{"mode":"completion","prompt":"x","output":"x","parameters":{"temperature":NaN}}',
        fld="parameters",
    )
    post("unknown fields", _share_body(admin=True, id="fixed", created_at="1970"), fld="admin")
    post("mode not a mode", _share_body(mode="../../etc/passwd"), fld="mode")
    post("body is a JSON list", ["mode", "prompt"], fld="body")
    post("body is not JSON", content=b"{mode: completion", fld="body")
    post(
        "duplicate keys",
        content=b'{"mode":"completion","mode":"fim","prompt":"x","output":"x"}',
        refuse=False,
    )
    p.raw_huge(route, "20 MiB body, Content-Length", "/api/shares", chunked=False)
    p.raw_huge(route, "20 MiB body, chunked", "/api/shares", chunked=True)
    p.request(route, "GET (method not allowed)", "GET", "api/shares", expect_refusal=True)
    p.request(route, "DELETE (method not allowed)", "DELETE", "api/shares", expect_refusal=True)
    p.request(
        route,
        "OPTIONS preflight from evil.example",
        "OPTIONS",
        "api/shares",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    return made


def share_page_cases(p: Probe, made: dict[str, str]) -> None:
    route = "/s/<id>"
    for name, sid in made.items():
        p.request(route, f"GET hostile share ({name})", "GET", f"s/{sid}", html_check=True)
    sid = next(iter(made.values()), "doesnotexist")
    p.request(route, "HEAD existing share", "HEAD", f"s/{sid}")
    p.request(route, "HEAD unknown id", "HEAD", "s/doesnotexist")
    raw = {
        "../../../../etc/passwd": "/s/../../../../etc/passwd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd": "/s/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2e%2e": "/s/%2e%2e",
        "..%5c..%5cwin.ini": "/s/..%5c..%5cwin.ini",
        "10 KB id": "/s/" + "a" * 10_000,
        "HTML/script id": "/s/" + quote(INJECT, safe=""),
        "attribute-breaking id": "/s/" + quote(INJECT_ATTR, safe=""),
        "NUL in id": "/s/abc%00def",
        "unicode id": "/s/" + quote("\u202e\U0001f600ü", safe=""),
        "SQL in id": "/s/" + quote("x' OR '1'='1", safe=""),
        "empty id": "/s/",
    }
    for name, target in raw.items():
        p.request(route, f"GET {name}", "GET", "s/x", target=target, html_check=True)

    route = "/s/<id>/delete"
    p.request(route, "GET no token", "GET", f"s/{sid}/delete", html_check=True, expect_refusal=True)
    p.request(
        route,
        "GET wrong token",
        "GET",
        f"s/{sid}/delete",
        params={"token": "wrong"},
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "GET 8 KB token",
        "GET",
        f"s/{sid}/delete",
        params={"token": "t" * 8000},
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "GET script token",
        "GET",
        f"s/{sid}/delete",
        params={"token": INJECT},
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "GET repeated token",
        "GET",
        f"s/{sid}/delete?token=a&token=b",
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "GET unknown id with script",
        "GET",
        "s/x/delete",
        target="/s/" + quote(INJECT, safe="") + "/delete?token=" + quote(INJECT, safe=""),
        html_check=True,
        expect_refusal=True,
    )
    form = {"content-type": "application/x-www-form-urlencoded"}
    p.request(
        route,
        "POST wrong token",
        "POST",
        f"s/{sid}/delete",
        content=b"token=wrong",
        headers=form,
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route, "POST no body", "POST", f"s/{sid}/delete", html_check=True, expect_refusal=True
    )
    p.request(
        route,
        "POST 1 MiB token",
        "POST",
        f"s/{sid}/delete",
        content=b"token=" + b"t" * 2**20,
        headers=form,
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "POST invalid UTF-8 token",
        "POST",
        f"s/{sid}/delete",
        content=b"token=\xff\xfe%ff",
        headers=form,
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "POST JSON token object",
        "POST",
        f"s/{sid}/delete",
        content=b'{"token":{"$ne":""}}',
        headers={"content-type": "application/json"},
        html_check=True,
        expect_refusal=True,
    )
    p.request(
        route,
        "POST traversal id",
        "POST",
        "s/x/delete",
        target="/s/..%2f..%2fapi%2fshares/delete",
        content=b"token=x",
        headers=form,
        html_check=True,
        expect_refusal=True,
    )
    p.raw_huge(
        route, "POST 20 MiB body, chunked", f"/s/{sid}/delete", chunked=True, field_="token|body"
    )
    p.request(route, "PUT (method not allowed)", "PUT", f"s/{sid}/delete", expect_refusal=True)


def share_api_cases(p: Probe) -> None:
    api = "share"
    good = {"mode": "completion", "prompt": "def f(", "output": "def f(x): pass\n"}

    def c(name, refuse=True, fld=None, **kw):
        return p.call(api, name, kwargs={**good, **kw}, expect_refusal=refuse, field_=fld)

    c("baseline", refuse=False)
    c("mode evil", fld="mode", mode="evil")
    c("mode null", fld="mode", mode=None)
    c("prompt object", fld="prompt", prompt={"$ne": 1})
    c("output list", fld="output", output=["x"])
    c("parameters list", fld="parameters", parameters=[1, 2])
    c("parameters string", fld="parameters", parameters="temperature=2")
    c("parameters 500 deep", fld="parameters", parameters=json.loads(nested(500)))
    c("model object", fld="model", model={"$ne": 1})
    c("output 6 MB", fld="output|body", output="y" * 6_000_000)
    c("HTML everywhere", refuse=False, prompt=INJECT, output=INJECT_ATTR, model=INJECT)
    case = p.call(
        api,
        "Host: evil.example",
        kwargs={**good, "prompt": "host"},
        headers={"host": "evil.example"},
    )
    if "evil.example" in case.body:
        case.concerns.append("the returned link is on the Host header's evil.example")


def page_cases(p: Probe, made: dict[str, str]) -> None:
    """`/?share=` page loads, and the load event that opens the share."""
    route = "/?share="
    values = {"HTML": INJECT, "attribute breaking": INJECT_ATTR, "traversal": "../../etc/passwd",
              "10 KB": "s" * 10_000, "NUL": "a\x00b"}  # fmt: skip
    for name, v in values.items():
        case, _ = p.request(
            route, f"page, share {name}", "GET", "", params={"share": v}, html_check=True
        )
        if case.status is not None and case.status != 200:
            case.concerns.append(f"the page answered {case.status}, not 200")
    load = p.dependency(
        lambda d, cs: any(
            t[1] == "load" for t in d.get("targets", []) if isinstance(t, list) and len(t) > 1
        )
    )
    if load is None:
        return
    route = "/gradio_api/queue/join (load ?share=)"
    outs = p.html_outputs(load)
    for name, v in {**values, **{f"hostile share {k}": sid for k, sid in made.items()}}.items():
        p.join(route, f"open share {name}", load["id"], [], query={"share": v}, html_outputs=outs)
