from __future__ import annotations

from reconciler.incoming.pipeline.html_text import html_to_text


def test_blocks_lists_entities_and_hidden_parts() -> None:
    html = ("<html><head><title>T</title><style>.a{}</style></head><body>"
            "<h1>Title</h1><p>One&nbsp;&amp; two</p><ul><li>a</li><li>b</li></ul>"
            "<script>var x = 1;</script>line<br>break<table><tr><td>c1</td><td>c2</td></tr>"
            "</table></body></html>")
    assert html_to_text(html) == "Title\n\nOne & two\n\n- a\n\n- b\n\nline\nbreak\n\nc1\n\nc2"


def test_broken_html_still_gives_its_text() -> None:
    assert html_to_text("<div><p>unclosed <b>bold") == "unclosed bold"
    assert html_to_text("") == ""
