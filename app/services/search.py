"""The training-data index as users reach it: full-text search with validated filters, and the
membership check of a generation (which spans it copied, and which data was checked)."""

from __future__ import annotations

import math

from app.attribution import AttributionIndex
from app.services.playground import Output
from model.errors import PlaygroundError

MAX_PAGE = 1000
MAX_QUERY_CHARS = 1000
MAX_FILTER_CHARS = 200


class Search:
    def __init__(self, index: AttributionIndex | None, indexed_model: str | None = None):
        self.index = index
        self.indexed_model = indexed_model  # whose training data the index holds, if known

    def search(self, query, repo=None, license=None, lang=None, page=1, exact=False) -> list:
        if self.index is None:
            raise PlaygroundError("Search is not available: no attribution index.", kind="config")
        query = check_search_text("query", query, MAX_QUERY_CHARS)
        filters = {name: check_search_text(name, value, MAX_FILTER_CHARS, optional=True)
                   for name, value in (("repo", repo), ("license", license), ("lang", lang))}  # fmt: skip
        if not isinstance(exact, bool | None):
            raise PlaygroundError(
                f"`exact` must be true or false; got {type(exact).__name__}.", field="exact"
            )
        return self.index.search(query, page=parse_page(page), exact=bool(exact), **filters)

    def attribute(self, text) -> list[dict]:
        """Spans of `text` found verbatim in the training data, each with its sources."""
        if self.index is None:
            return []
        return [s.to_dict() for s in self.index.attribute(text)]

    def attribute_output(self, out: Output) -> list[dict]:
        """Verbatim training-data spans of the output that touch what the model generated."""
        if self.index is None or not out.generated:
            return []
        start, end = out.generated_span
        return [s for s in self.attribute(out.text) if s["end"] > start and s["start"] < end]

    def summary(self) -> str:
        return self.index.stats().summary if self.index else "No attribution index."

    def checked_against(self, model_id: str) -> str:
        """Which data the check covered: an empty result says nothing about another model's."""
        summary = self.summary()
        if not self.indexed_model or model_id == self.indexed_model:
            return f"Checked against: {summary}"
        return (
            f"Checked against {self.indexed_model}'s training data only ({summary}). "
            f"{model_id}'s own training data is not indexed here, so this check cannot show "
            "what it may have copied from it."
        )


def parse_page(value) -> int:
    if value is None or value == "":
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PlaygroundError(
            f"`page` must be a whole number from 1 to {MAX_PAGE}; got {type(value).__name__}.",
            field="page",
        )
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number.is_integer() or not 1 <= number <= MAX_PAGE:
        raise PlaygroundError(
            f"`page` must be a whole number from 1 to {MAX_PAGE}; got {str(value)[:40]!r}.",
            field="page",
        )
    return int(number)


def check_search_text(field: str, value, limit: int, *, optional: bool = False) -> str | None:
    """Search text and filters are plain strings: an object such as {"$ne": 1} is refused."""
    if value is None or (optional and value == ""):
        if optional:
            return None
        value = ""
    if not isinstance(value, str):
        raise PlaygroundError(f"`{field}` must be text; got {type(value).__name__}.", field=field)
    if len(value) > limit:
        raise PlaygroundError(
            f"`{field}` is {len(value):,} characters; the limit is {limit:,}.", field=field
        )
    if "\x00" in value:
        raise PlaygroundError(f"`{field}` contains a NUL character.", field=field)
    return value
