"""Route parameter types that sign the request in and check its role, e.g.
``def page(principal: Viewer)`` (``session.needs`` as an annotated dependency)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from reconciler.console.session import needs
from reconciler.runtime.access import Principal, Role

Viewer = Annotated[Principal, Depends(needs(Role.VIEWER))]
Auditor = Annotated[Principal, Depends(needs(Role.AUDITOR))]
Operator = Annotated[Principal, Depends(needs(Role.OPERATOR))]
