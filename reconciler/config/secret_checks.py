"""The validate stage for where secret references point (SPEC S2).

The daemon refuses the same references when it resolves them; reporting them
here makes a pull request that points a secret at ``file:/etc/shadow`` or
``env:RECONCILE_TOKEN_KEY`` fail `validate` and `plan` with the file and line,
before anything is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.config.diagnostics import Diagnostic
from reconciler.config.loaded import LoadedResource
from reconciler.config.secret_places import PlaceRefused, PlacesSettingError, SecretPlaces
from reconciler.config.secrets import iter_refs

CODE = "secret-place"


def check_secret_places(
    resources: Sequence[LoadedResource], places: SecretPlaces | None = None
) -> list[Diagnostic]:
    try:
        places = places or SecretPlaces.from_environ()
    except PlacesSettingError as exc:
        return [Diagnostic(code=CODE, message=str(exc),
                           hint="fix the setting in the environment of validate and the "
                           "daemon")]
    out: list[Diagnostic] = []
    for res in resources:
        # The YAML as written (not the model) so each error points at its own line.
        for path, ref in iter_refs(res.document.data):
            try:
                places.check(ref)
            except PlaceRefused as exc:
                out.append(res.diagnostic(CODE, exc.message, path, hint=exc.hint))
    return out
