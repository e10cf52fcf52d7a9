"""The web console (SPEC X6): the seeds' screens, served by the daemon.

Server-rendered pages (Jinja2) with a little progressive enhancement (htmx,
vendored under ``static/``): every screen works without JavaScript, and every
screen asks the signed-in :class:`~reconciler.runtime.access.Principal` for the
role it needs and filters by the namespaces the principal may see.

- ``app``: the router the daemon mounts under ``/console``.
- ``deps``: what the screens read (the store contract, settings, live config).
- ``render``: the template environment and the one way to render a page.
- ``session``: sign-in (token or OpenID Connect), the signed session cookie, CSRF.
- one module per screen.
"""
