"""What a share may hold: every field checked at the edge, with messages that name the field,
the limit and the value given. `validate` returns the columns to store (JSON as text)."""

from __future__ import annotations

import json
from typing import Any

from app.limits import Limits
from app.validation import check_mode
from model.errors import PlaygroundError

MAX_JSON_DEPTH = 16  # shares hold flat parameters and shallow spans; deeper is not a share


def validate(lim: Limits, mode, prompt, output, parameters, model, fim, spans) -> dict[str, Any]:
    check_mode(mode)
    _check_text("prompt", prompt, lim.max_prompt_bytes)
    _check_text("output", output, lim.max_output_bytes)
    if not prompt and not output:
        raise PlaygroundError(
            "Nothing to share: `prompt` and `output` are both empty.", field="output"
        )
    if model is not None:
        if not isinstance(model, str):
            raise PlaygroundError("`model` must be a string.", field="model")
        if len(model) > lim.max_model_chars or not model.isprintable():
            raise PlaygroundError(
                f"`model` must be at most {lim.max_model_chars} printable characters. "
                f"Given: {len(model)} characters.",
                field="model",
            )
        model = model or None
    params_json = _dump_json("parameters", parameters or {}, lim.max_parameters_bytes, dict)
    fim_json = None
    if fim is not None:
        if mode != "fim":
            raise PlaygroundError(
                f"`fim` is only for mode 'fim'. Given mode: {mode!r}.", field="fim"
            )
        fim_json = json.dumps(_fim_split(fim, output))
    spans_json = _dump_json("spans", spans or [], lim.max_spans_bytes, list)
    _check_spans(spans or [], output, lim.max_spans)
    return {
        "mode": mode,
        "prompt": prompt,
        "output": output,
        "model": model,
        "parameters": params_json,
        "fim": fim_json,
        "spans": spans_json,
    }


def _check_text(name: str, value: Any, max_bytes: int) -> None:
    if not isinstance(value, str):
        raise PlaygroundError(
            f"`{name}` must be a string. Given: {type(value).__name__}.", field=name
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PlaygroundError(
            f"`{name}` is not valid Unicode (unpaired surrogate at character {exc.start}).",
            field=name,
        ) from None
    if size > max_bytes:
        raise PlaygroundError(
            f"`{name}` must be at most {max_bytes:,} bytes (UTF-8). Given: {size:,} bytes.",
            field=name,
        )
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it on both databases
        raise PlaygroundError(
            f"`{name}` contains a NUL character at position {value.index(chr(0))}.", field=name
        )


def _dump_json(name: str, value: Any, max_bytes: int, kind: type) -> str:
    if not isinstance(value, kind):
        raise PlaygroundError(
            f"`{name}` must be a JSON {'object' if kind is dict else 'list'}. "
            f"Given: {type(value).__name__}.",
            field=name,
        )
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise PlaygroundError(
            f"`{name}` must nest at most {MAX_JSON_DEPTH} levels deep. Given: more than that.",
            field=name,
        )
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise PlaygroundError(f"`{name}` is not valid JSON data: {exc}.", field=name) from None
    if "\\u0000" in text:
        raise PlaygroundError(f"`{name}` contains a NUL character.", field=name)
    if size > max_bytes:
        raise PlaygroundError(
            f"`{name}` must be at most {max_bytes:,} bytes as JSON. Given: {size:,} bytes.",
            field=name,
        )
    return text


def _json_depth(value: Any) -> int:
    """Nesting depth, without recursion: json.dumps of deep data raised RecursionError (a 500)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _fim_split(fim: Any, output: str) -> dict[str, int]:
    """The split as stored: {middle_start, middle_end}, str indices into `output`."""
    n = len(output)
    if isinstance(fim, dict) and {"prefix", "middle", "suffix"} <= fim.keys():
        p, m, s = fim["prefix"], fim["middle"], fim["suffix"]
        if not all(isinstance(x, str) for x in (p, m, s)) or p + m + s != output:
            raise PlaygroundError(
                "`fim` prefix + middle + suffix must equal `output` "
                f"({n} characters). Given: {sum(len(str(x)) for x in (p, m, s))} characters.",
                field="fim",
            )
        return {"middle_start": len(p), "middle_end": len(p) + len(m)}
    if isinstance(fim, dict) and {"middle_start", "middle_end"} <= fim.keys():
        a, b = fim["middle_start"], fim["middle_end"]
        if _is_int(a) and _is_int(b) and 0 <= a <= b <= n:
            return {"middle_start": a, "middle_end": b}
        raise PlaygroundError(
            f"`fim` needs 0 <= middle_start <= middle_end <= {n} (length of `output`). "
            f"Given: middle_start={a!r}, middle_end={b!r}.",
            field="fim",
        )
    raise PlaygroundError(
        "`fim` must be {middle_start, middle_end} or {prefix, middle, suffix}. "
        f"Given keys: {sorted(fim) if isinstance(fim, dict) else type(fim).__name__}.",
        field="fim",
    )


def _check_spans(spans: list[Any], output: str, max_spans: int) -> None:
    if len(spans) > max_spans:
        raise PlaygroundError(
            f"`spans` must have at most {max_spans} entries. Given: {len(spans)}.", field="spans"
        )
    n = len(output)
    for i, span in enumerate(spans):
        ok = isinstance(span, dict) and _is_int(span.get("start")) and _is_int(span.get("end"))
        if not ok or not 0 <= span["start"] <= span["end"] <= n:
            raise PlaygroundError(
                f"`spans[{i}]` must be {{start, end}} with 0 <= start <= end <= {n} "
                f"(length of `output`). Given: {json.dumps(span)[:80]}.",
                field="spans",
            )
