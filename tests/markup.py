"""Reading HTML the way a browser would, for tests of the code view and the share pages: the text
a reader sees, which marks cover each character, and tags that must balance."""

from __future__ import annotations

from html.parser import HTMLParser

XSS = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
MARKS = ("mark", "ins")


class Page(HTMLParser):
    """Tags, meta tags and text of `html`; raises AssertionError on an end tag that does not
    close the innermost open element, or on elements left open."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.meta: dict[str, str] = {}
        self.text: list[str] = []
        self.generated: list[str] = []  # text inside <ins class="gen">
        self.covered: list[tuple[str, ...]] = []  # per character: classes of the marks around it
        self._open: list[tuple[str, str]] = []  # (tag, class) of the open elements
        self.feed(html)
        self.close()
        assert not self._open, f"unclosed: {self._open}"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "meta" and ("property" in a or "name" in a):
            self.meta[a.get("property") or a["name"]] = a.get("content", "")
        if tag not in VOID:
            self._open.append((tag, a.get("class") or ""))

    def handle_endtag(self, tag):
        assert self._open and self._open[-1][0] == tag, f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()

    def handle_data(self, data):
        self.text.append(data)
        marks = tuple(cls for tag, cls in self._open if tag in MARKS)
        self.covered += [marks] * len(data)
        if ("ins", "gen") in self._open:
            self.generated.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)

    def marked(self, css_class: str) -> set[int]:
        """Offsets (into all_text) of the characters inside a mark of this class."""
        return {i for i, marks in enumerate(self.covered) if css_class in marks}


def assert_inert(page: Page) -> None:
    """No script, no inline handlers, no injected elements from user content."""
    for tag, attrs in page.tags:
        assert tag not in ("script", "img", "svg", "iframe", "object")
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
