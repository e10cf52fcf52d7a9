"""HTML to plain text: an incoming HTML-only mail's ticket description, and the
text/plain alternative compose gives an HTML-only notification (a spam filter
scores HTML without one, and text-only clients show it).

Block elements become line breaks, list items get a dash, scripts, styles and
the head are dropped, entities are decoded, runs of blank space collapse, and a
link keeps its target as "text (url)" unless the text already says it.
Not a renderer: tables come out one cell per line.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = frozenset({
    "address", "article", "blockquote", "br", "dd", "div", "dl", "dt", "footer", "h1", "h2",
    "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre", "section", "table", "td",
    "th", "tr", "ul",
})
_SKIP = frozenset({"script", "style", "head", "title", "template"})
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.links: list[tuple[str | None, int]] = []  # open <a>: href, where its text starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append((dict(attrs).get("href"), len(self.out)))
        elif tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.out.append("\n")
            if tag == "li":
                self.out.append("- ")

    def handle_startendtag(self, tag: str, _attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.links:
            href, start = self.links.pop()
            target = _target(href)
            text = " ".join("".join(self.out[start:]).split())
            if target and target not in text and text not in (target, f"mailto:{target}"):
                self.out.append(f" ({target})" if text else target)
        elif tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data.replace("\n", " "))


def _target(href: str | None) -> str | None:
    """What a reader needs of a link: web and mail targets, not anchors or scripts."""
    href = (href or "").strip()
    if href.casefold().startswith("mailto:"):
        return href[7:].split("?")[0] or None
    return href if href.casefold().startswith(("http://", "https://", "ftp://")) else None


def html_to_text(html: str) -> str:
    parser = _Text()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # html.parser is lenient; anything left is not worth failing a mail over
        pass
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.out).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
