"""The training-data index as users reach it: full-text search with validated filters, and the
membership check of a generation (which spans it copied, and which data was checked)."""

from __future__ import annotations

from app.attribution import AttributionIndex
from app.services.playground import Output
from model.errors import PlaygroundError


class Search:
    def __init__(self, index: AttributionIndex | None, indexed_model: str | None = None):
        self.index = index
        self.indexed_model = indexed_model  # whose training data the index holds, if known

    def search(self, query, repo=None, license=None, lang=None, page=1, exact=False) -> list:
        if self.index is None:
            raise PlaygroundError("Search is not available: no attribution index.", kind="config")
        if not isinstance(exact, bool | None):
            raise PlaygroundError(
                f"`exact` must be true or false; got {type(exact).__name__}.", field="exact"
            )
        # The index checks the text, the filters and the page (app/attribution/search.py).
        return self.index.search(
            query, repo=repo, license=license, lang=lang, page=page, exact=bool(exact)
        )

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
