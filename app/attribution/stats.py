"""What an attribution index holds: counts by repo, license, language and split, and a summary
line for the UI."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexStats:
    documents: int
    bytes: int
    repos: int
    top_repos: dict[str, int]
    licenses: dict[str, int]
    languages: dict[str, int]
    splits: dict[str, int]
    description: str
    backend: str
    bloom_bytes: int = 0
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line for the UI: how big the index is and what it covers."""
        if not self.documents:
            return "Attribution index is empty: verbatim spans cannot be checked."
        repos = ", ".join(list(self.top_repos)[:3])
        more = f" and {self.repos - 3} more" if self.repos > 3 else ""
        licenses = ", ".join(list(self.licenses)[:4])
        langs = ", ".join(x for x in list(self.languages)[:3] if x) or "mixed languages"
        what = f" ({self.description})" if self.description else ""
        return (
            f"Attribution index{what}: {self.documents:,} files, {self.bytes / 1e6:.1f} MB "
            f"from {self.repos} repo{'s' if self.repos != 1 else ''} ({repos}{more}); "
            f"{langs}; licenses {licenses}."
        )

    def to_dict(self) -> dict:
        return {
            "documents": self.documents,
            "megabytes": round(self.bytes / 1e6, 2),
            "repos": self.repos,
            "top_repos": self.top_repos,
            "licenses": self.licenses,
            "languages": self.languages,
            "splits": self.splits,
            "backend": self.backend,
            "bloom_bytes": self.bloom_bytes,
            "index_bytes": self.sizes,
            "summary": self.summary,
        }
