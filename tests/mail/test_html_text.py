from __future__ import annotations

from reconciler.mail.html_text import html_to_text


def test_blocks_lists_entities_and_hidden_parts() -> None:
    html = ("<html><head><title>T</title><style>.a{}</style></head><body>"
            "<h1>Title</h1><p>One&nbsp;&amp; two</p><ul><li>a</li><li>b</li></ul>"
            "<script>var x = 1;</script>line<br>break<table><tr><td>c1</td><td>c2</td></tr>"
            "</table></body></html>")
    assert html_to_text(html) == "Title\n\nOne & two\n\n- a\n\n- b\n\nline\nbreak\n\nc1\n\nc2"


def test_broken_html_still_gives_its_text() -> None:
    assert html_to_text("<div><p>unclosed <b>bold") == "unclosed bold"
    assert html_to_text("") == ""


def test_links_keep_their_target_unless_the_text_says_it() -> None:
    html = ('<p>See <a href="https://desk.acme.example/t/7">request 7</a>, '
            '<a href="https://acme.example">https://acme.example</a>, '
            '<a href="mailto:help@acme.example?subject=x">help@acme.example</a>, '
            '<a href="mailto:help@acme.example">write to us</a>, '
            '<a href="#top">top</a>, <a href="javascript:void(0)">js</a> and '
            '<a href="https://acme.example/logo"><img src="cid:x"></a>.</p>')
    assert html_to_text(html) == (
        "See request 7 (https://desk.acme.example/t/7), https://acme.example, "
        "help@acme.example, write to us (help@acme.example), top, js and "
        "https://acme.example/logo.")
