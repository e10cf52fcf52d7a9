"""What the role and namespace checks add to the intake path's token check.

Baseline: ``BearerTokens.identify`` alone (what the 401 check did before roles).
With roles: ``guard.check_bearer`` (identify, returning the precomputed Principal),
``guard.require(principal, SENDER)`` and ``principal.sees(namespace)``, as
``intake_route`` runs them per request. Prints ns per request, median / min / max
over several rounds, for 1 and 20 configured tokens (every digest is compared).

    python bench/token_check.py [--rounds 7] [--calls 200000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import timeit

from reconciler.daemon.api.guard import check_bearer, require
from reconciler.runtime.access import Role, TokenSpec
from reconciler.runtime.api_tokens import BearerTokens


def _tokens(count: int) -> tuple[BearerTokens, str]:
    specs = []
    for i in range(count):
        env = f"RECONCILE_BENCH_TOKEN_{i}"
        os.environ[env] = secrets.token_hex(20)
        specs.append(TokenSpec(f"env:{env}", (Role.SENDER,), ("acme",), f"t{i}"))
    return BearerTokens((), specs), os.environ[f"RECONCILE_BENCH_TOKEN_{count - 1}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    scope: dict[str, object] = {}
    for count in (1, 20):
        tokens, presented = _tokens(count)

        def baseline(tokens: BearerTokens = tokens, presented: str = presented) -> None:
            tokens.identify(presented)

        def with_roles(tokens: BearerTokens = tokens, presented: str = presented) -> None:
            principal = check_bearer(tokens, scope, presented)
            require(principal, Role.SENDER, scope)
            principal.sees("acme")

        for name, fn in (("identify only (baseline)", baseline),
                         ("identify+role+scope", with_roles)):
            runs = [timeit.timeit(fn, number=args.calls) / args.calls * 1e9
                    for _ in range(args.rounds)]
            print(f"{count:>2} tokens  {name:<26} median {statistics.median(runs):7.0f} ns"
                  f"  min {min(runs):7.0f}  max {max(runs):7.0f}")


if __name__ == "__main__":
    main()
