"""`python -m reconciler` is the `reconcile` command."""

from reconciler.cli.main import main

main()
