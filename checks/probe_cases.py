"""The probe's other case groups: generation (/complete, /fill, /assist), attribution and
search, the browser's own queue events, the operational routes, and the heavy cases last."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

from checks.probe_checks import INJECT, INJECT_ATTR, Case
from checks.probe_client import Probe

GENERATE_TOKENS = 4  # every generation the probe may cause is this short
UPLOAD_BYTES = 8 * 2**20


def generation_cases(p: Probe) -> None:
    """/complete, /fill, /assist: wrong types and hostile values for each parameter."""
    ok = {"max_new_tokens": GENERATE_TOKENS, "temperature": 0}
    for api, prompt_name, base in (
        ("complete", "prompt", "def f(x):\n"),
        ("fill", "prompt", "def f(x):\n    <FILL_HERE>\n"),
        ("assist", "message", "How do I sort a list?"),
    ):

        def c(name, refuse=True, fld=None, api=api, prompt_name=prompt_name, base=base, **kw):
            args = {prompt_name: base, **ok, **kw}
            return p.call(api, name, kwargs=args, expect_refusal=refuse, field_=fld)

        c("baseline", refuse=False)
        c(f"{prompt_name} empty", fld=prompt_name, **{prompt_name: ""})
        c(f"{prompt_name} null", fld=prompt_name, **{prompt_name: None})
        c(f"{prompt_name} number", fld=prompt_name, **{prompt_name: 12345})
        c(f"{prompt_name} object", fld=prompt_name, **{prompt_name: {"$ne": 1}})
        c(f"{prompt_name} 1 MB", fld=prompt_name, **{prompt_name: "x = 1\n" * 170_000})
        c(f"{prompt_name} with NUL", refuse=False, **{prompt_name: base + "\x00"})
        c(f"{prompt_name} lone surrogate", refuse=False, **{prompt_name: base + "\ud800"})
        c(
            f"{prompt_name} special tokens",
            refuse=False,
            **{prompt_name: "<|endoftext|><fim_prefix><fim_middle>" + base},
        )
        c(f"{prompt_name} HTML", refuse=False, **{prompt_name: INJECT + base})
        if api == "complete":
            for v in (10**12, -1, 0, 1.5, "x", None, [4]):
                c(f"max_new_tokens {v!r}", fld="max_new_tokens", max_new_tokens=v)
            for v in (float("nan"), float("inf"), -1, 5, "hot", [0.2]):
                c(f"temperature {v!r}", fld="temperature", temperature=v)
            for v in (0, 2, float("nan"), "x"):
                c(f"top_p {v!r}", fld="top_p", top_p=v)
            for v in (0, -5, 1e308, "x"):
                c(f"repetition_penalty {v!r}", fld="repetition_penalty", repetition_penalty=v)
            for v in (2**70, -1, 1.5, "abc", {"a": 1}):
                c(f"seed {v!r}", fld="seed", refuse=v not in (-1,), seed=v)
            for v in ({"a": 1}, [None], ["x"] * 100, ["y" * 100_000], 7):
                c(f"stop {str(v)[:30]}", fld="stop", stop=v)
            c("stop empty string", refuse=False, stop=[""])
            for v in ("no-such-model", "../../../../etc/passwd", {"$ne": 1}, 5, INJECT):
                c(f"model {v!r}", fld="model", model=v)
            p.call(api, "data has 20 values", data=[base] + [None] * 19, expect_refusal=True)
            p.call(
                api, "data is a string", body=b'{"data": "x"}', expect_refusal=True, field_="data"
            )
            p.call(api, "body is not JSON", body=b"{data: [", expect_refusal=True)
            p.call(
                api,
                "JSON nested 100,000 deep",
                expect_refusal=True,
                body=b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
            )
            p.call(
                api,
                "Host: evil.example",
                kwargs={prompt_name: base, **ok},
                headers={"host": "evil.example"},
            )
            p.raw_huge(
                f"/gradio_api/call/{api}",
                "20 MiB body, chunked",
                f"/gradio_api/call/{api}",
                chunked=True,
            )
            p.raw_huge(
                f"/gradio_api/call/{api}",
                "20 MiB body, Content-Length",
                f"/gradio_api/call/{api}",
                chunked=False,
            )
        if api == "fill":
            c("no <FILL_HERE>", fld="<FILL_HERE>", prompt="def f(x):\n    return x\n")
            c("two <FILL_HERE>", fld="<FILL_HERE>", prompt="a<FILL_HERE>b<FILL_HERE>c")
            c("only <FILL_HERE>", refuse=False, prompt="<FILL_HERE>")
            c("max_new_tokens -1", fld="max_new_tokens", max_new_tokens=-1)
            c("model not on offer", fld="model", model="codellama-70b")
        if api == "assist":
            for name, h in (
                ("a string", "hello"),
                ("numbers", [1, 2]),
                ("one-item turn", [["a"]]),
                ("three-item turn", [["a", "b", "c"]]),
                ("messages dicts", [{"role": "user", "content": "x"}]),
                ("null pair", [[None, None]]),
                ("objects", [[{"a": 1}, ["x"]]]),
                ("object", {"turns": 1}),
            ):
                c(f"history {name}", fld="history", history=h)
            c("history with HTML", refuse=False, history=[[INJECT, INJECT_ATTR]])
            c("seed -1", fld="seed", seed=-1, refuse=False)


def heavy_cases(p: Probe) -> None:
    """Last, because a server that has not fixed them may keep a core busy long after."""
    ok = {"message": "And now?", "max_new_tokens": GENERATE_TOKENS, "temperature": 0}
    p.call(
        "assist",
        "history 1,000 turns",
        kwargs={**ok, "history": [["1+1?", "2"]] * 1000},
        limit_s=10,
    )
    p.call(
        "assist",
        "history 1,000 turns of 1 KB",
        kwargs={**ok, "history": [["q" * 500, "a" * 500]] * 1000},
        expect_refusal=True,
        field_="history",
        limit_s=10,
    )


def attribute_search_cases(p: Probe) -> None:
    def a(name, text, refuse=True):
        return p.call(
            "attribute", name, kwargs={"text": text}, expect_refusal=refuse, field_="text"
        )

    a("baseline", "import os\nimport sys\n", refuse=False)
    a("text null", None)
    a("text number", 5)
    a("text object", {"a": 1})
    a("text empty", "", refuse=False)
    a("text 1 MB", "def f(x):\n    return x\n" * 40_000)
    a("text with NUL", "import os\x00\n", refuse=False)
    a("text lone surrogate", "import os\ud800\n", refuse=False)

    def s(name, refuse=True, fld=None, **kw):
        args = {"query": "json decoder", "page": 1, **kw}
        return p.call("search", name, kwargs=args, expect_refusal=refuse, field_=fld)

    s("baseline", refuse=False)
    for v in (0, 1.5, -1, "x", 10**12, None, [1]):
        s(f"page {v!r}", fld="page", refuse=v is not None, page=v)
    s("repo {'$ne': 1}", fld="repo", repo={"$ne": 1})
    s("license [1]", fld="license", license=[1])
    s("lang 5", fld="lang", lang=5)
    s("exact object", fld="exact", exact={"a": 1})
    s("query empty", fld="query", refuse=False, query="")
    s("query null", fld="query", query=None)
    s("query number", fld="query", query=42)
    for q in ('"', "NEAR(a b", "a OR", "*", "col:val", "a AND (b", "') OR 1=1 --", "^x"):
        s(f"FTS syntax {q!r}", refuse=False, query=q)
    s("query 100 KB", fld="query", query="word " * 20_000)
    s("exact FTS syntax", refuse=False, query='"a" OR "b', exact=True)


def ui_cases(p: Probe) -> None:
    """The browser's own events through raw queue joins: hostile session hashes, HTML outputs."""
    comps = p.components()

    def gen_dep(prefix: str):
        def pred(d, cs):
            outs = [cs.get(o, {}).get("type") for o in d.get("outputs", [])]
            ins = [cs.get(i, {}).get("props", {}).get("elem_id") for i in d.get("inputs", [])]
            return "downloadbutton" in outs and f"{prefix}-prompt" in ins

        return p.dependency(pred)

    gen = gen_dep("completion") or p.dependency(
        lambda d, cs: "downloadbutton" in [cs.get(o, {}).get("type") for o in d["outputs"]]
    )
    route = "/gradio_api/queue/join (generate)"
    if gen is None:
        p.report.cases.append(
            Case(
                route,
                "find the generate event in /config",
                body=json.dumps(p.config)[:500],
                failures=[],
                concerns=["no event with a DownloadButton output"],
            )
        )
        return
    overrides = {"prompt": "def f(x):\n", "max-new-tokens": GENERATE_TOKENS, "temperature": 0}
    data = p.ui_inputs(gen, overrides)
    outs = p.html_outputs(gen)
    hashes = {
        "/tmp/<marker>": "/tmp/{m}",
        "../../../../tmp/<marker>": "../../../../tmp/{m}",
        "../../../../../../../../<marker>": "../../../../../../../../{m}",
        "..": "..",
        ".": ".",
        "a/../../<marker>-b": "a/../../{m}-b",
        "../<marker>": "../{m}",
        "10 KB string": "{m}" + "A" * 10_000,
        "unicode": "{m}-\u202e\U0001f600ü",
        "NUL byte": "{m}\x00.py",
        "backslashes": "..\\..\\{m}",
        "empty": "",
        "HTML": INJECT + "{m}",
    }
    for name, template in hashes.items():
        m = p.new_marker()
        sh = template.replace("{m}", m)
        p.join(
            route,
            f"session_hash {name}",
            gen["id"],
            data,
            session_hash=sh,
            html_outputs=outs,
            watch=(sh, m),
        )
    # Data the browser would never send.
    p.join(
        route,
        "prompt with HTML",
        gen["id"],
        p.ui_inputs(gen, {**overrides, "prompt": INJECT + INJECT_ATTR + "\n"}),
        html_outputs=outs,
    )
    p.join(
        route,
        "session_hash a number",
        gen["id"],
        data,
        session_hash=12345,
        expect_refusal=True,
        field_="session_hash",
    )
    p.join(route, "fn_index 99999", 99999, data, expect_refusal=True, field_="fn_index")
    p.join(route, "fn_index -1", -1, data, expect_refusal=True)
    p.join(route, "fn_index string", "x", data, expect_refusal=True, field_="fn_index")
    p.join(route, "data not a list", gen["id"], "x", expect_refusal=True, field_="data")
    p.join(route, "data too short", gen["id"], data[:2], expect_refusal=True)
    p.join(route, "data wrong types", gen["id"], [{"a": 1}] * len(data), expect_refusal=True)
    p.join(
        route,
        "max new tokens 10^9",
        gen["id"],
        p.ui_inputs(gen, {**overrides, "max-new-tokens": 10**9}),
        expect_refusal=True,
        field_="max_new_tokens|max new tokens",
        html_outputs=outs,
    )
    p.join(
        route,
        "model not a choice",
        gen["id"],
        p.ui_inputs(gen, {**overrides, "model": "../../etc/passwd"}),
        expect_refusal=True,
        field_="model",
        html_outputs=outs,
    )
    p.join(
        route, "trigger_id string", gen["id"], data, extra={"trigger_id": "x"}, expect_refusal=True
    )
    fim = gen_dep("fim")
    if fim is not None:
        p.join(
            "/gradio_api/queue/join (fill)",
            "prompt with HTML and <FILL_HERE>",
            fim["id"],
            p.ui_inputs(fim, {**overrides, "prompt": f"{INJECT}<FILL_HERE>{INJECT_ATTR}"}),
            html_outputs=p.html_outputs(fim),
        )
        p.join(
            "/gradio_api/queue/join (fill)",
            "two <FILL_HERE>",
            fim["id"],
            p.ui_inputs(fim, {**overrides, "prompt": f"{INJECT}<FILL_HERE><FILL_HERE>"}),
            html_outputs=p.html_outputs(fim),
            expect_refusal=True,
            field_="FILL_HERE",
        )

    search = p.dependency(
        lambda d, cs: any(
            cs.get(i, {}).get("props", {}).get("elem_id") == "search-query" for i in d["inputs"]
        )
    )
    if search is not None:
        route = "/gradio_api/queue/join (search)"
        so = p.html_outputs(search)
        p.join(
            route,
            "query with HTML",
            search["id"],
            p.ui_inputs(search, {"search-query": INJECT, "search-page": 1}),
            html_outputs=so,
        )
        p.join(
            route,
            "filters with HTML",
            search["id"],
            p.ui_inputs(
                search,
                {
                    "search-query": "json",
                    "search-repo": INJECT,
                    "search-license": INJECT_ATTR,
                    "search-lang": INJECT,
                    "search-page": 1,
                },
            ),
            html_outputs=so,
        )
        p.join(
            route,
            "page -1 and HTML query",
            search["id"],
            p.ui_inputs(search, {"search-query": INJECT, "search-page": -1}),
            html_outputs=so,
            expect_refusal=True,
            field_="page",
        )

    chat = p.dependency(
        lambda d, cs: any(
            cs.get(i, {}).get("props", {}).get("elem_id") == "assistant-message"
            for i in d["inputs"]
        )
    )
    if chat is not None:
        route = "/gradio_api/queue/join (assistant)"
        co = p.html_outputs(chat)
        p.join(
            route,
            "chat history wrong shape",
            chat["id"],
            p.ui_inputs(
                chat, {**overrides, "assistant-message": "hi", "assistant-chat": [["a", "b", "c"]]}
            ),
            html_outputs=co,
            expect_refusal=True,
            field_="history|tech assistant",
        )
        p.join(
            route,
            "message with HTML",
            chat["id"],
            p.ui_inputs(chat, {**overrides, "assistant-message": INJECT, "assistant-chat": []}),
            html_outputs=co,
        )
    _ = comps


def ops_cases(p: Probe) -> None:
    def get(route, name, url=None, method="GET", refuse=False, **kw):
        return p.request(
            route,
            name,
            method,
            url if url is not None else route.lstrip("/"),
            expect_refusal=refuse,
            **kw,
        )

    get("/healthz", "GET", allow_503=True)  # 503 until a model can generate: by design
    get("/healthz", "POST (method not allowed)", method="POST", refuse=True)
    get("/metrics", "GET")
    get("/metrics", "PUT (method not allowed)", method="PUT", refuse=True)
    get("/monitoring", "GET", refuse=True)
    get("/monitoring", "GET with a guessed key", url="monitoring/abc", refuse=True)
    get("/gradio_api/info", "GET")
    get("/config", "GET")
    get("/gradio_api/openapi.json", "GET")
    get("/gradio_api/dev/reload", "GET (endless stream in dev mode)", stream_limit_s=2.0)
    get(
        "/gradio_api/heartbeat/<hash>",
        "GET hostile hash",
        url="gradio_api/heartbeat/" + quote("../../" + INJECT, safe=""),
        stream_limit_s=2.0,
    )
    get(
        "/gradio_api/queue/data",
        "GET unknown session",
        url="gradio_api/queue/data",
        params={"session_hash": "../" + INJECT},
        stream_limit_s=3.0,
    )
    get(
        "/gradio_api/cancel",
        "POST hostile body",
        url="gradio_api/cancel",
        method="POST",
        json={"session_hash": "../x", "fn_index": -1, "event_id": INJECT},
        refuse=False,
    )
    for name, path in (
        ("/etc/passwd", "/etc/passwd"),
        ("the share database", os.path.join(p.data_dir, "playground.db")),
        ("traversal", "../../../../etc/passwd"),
    ):
        case, _ = get(
            "/gradio_api/file=", f"file= {name}", url=f"gradio_api/file={path}", refuse=True
        )
        if case.status == 200 and ("root:" in case.body or "SQLite format" in case.body):
            case.concerns.append("serves a file it should not")
    # Uploads: a large file named with the marker; Gradio would keep it in its cache folder.
    m = p.new_marker()
    size = UPLOAD_BYTES
    files = {"files": (f"{m}.bin", b"\0" * size, "application/octet-stream")}
    case, _ = get(
        "/gradio_api/upload",
        f"upload {size // 2**20} MiB",
        url="gradio_api/upload",
        method="POST",
        files=files,
    )
    case.marker = m
    m2 = p.new_marker()
    files = {"files": (f"../../../../tmp/{m2}.py", b"print(1)\n", "text/x-python")}
    case, _ = get(
        "/gradio_api/upload",
        "upload with a traversal filename",
        url="gradio_api/upload",
        method="POST",
        files=files,
    )
    case.marker = m2
    get("/gradio_api/upload", "GET (method not allowed)", url="gradio_api/upload", refuse=True)
    get("/<unknown>", "GET unknown path", url="no/such/page", refuse=True)
    get("/<unknown>", "GET unknown API", url="gradio_api/call/nope", refuse=True)
    p.call(
        "nope",
        "POST unknown API name",
        data=[],
        expect_refusal=True,
        route="/gradio_api/call/<unknown>",
    )
    get("/", "PATCH (method not allowed)", url="", method="PATCH", refuse=True)
    get("/", "TRACE", url="", method="TRACE", refuse=True)
    get("/", "8 KB path", url="", target="/" + "x" * 8192, refuse=True)
    for route, url in (("/", ""), ("/config", "config")):
        case, _ = get(
            route, "Host: evil.example", url=url, headers={"host": "evil.example"}, html_check=True
        )
        if "evil.example" in case.body:
            case.concerns.append("the response names the Host header's evil.example")
    get("/config", "200 headers", headers={f"x-h{i}": "v" * 100 for i in range(200)})
