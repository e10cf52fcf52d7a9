"""The template environment and :func:`page`, the one way a screen renders.

Autoescaping is on for every template: values from the store (subjects, error
texts, recipients) are shown, never interpreted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reconciler.runtime.access import Principal

_HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt variable fails the test, not the page silently
    trim_blocks=True,
    lstrip_blocks=True,
)
STATIC = _HERE / "static"


def page(request: Request, template: str, principal: Principal | None, *,
         status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` (which extends ``base.html``) for ``principal``.

    ``request.state.csrf_token`` is set by the session layer for a signed-in
    request; every form on a page carries it.
    """
    html = TEMPLATES.get_template(template).render(
        request=request, principal=principal,
        csrf_token=getattr(request.state, "csrf_token", ""),
        root=request.scope.get("root_path", "") + "/console", **context)
    return HTMLResponse(html, status_code=status_code)
