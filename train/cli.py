"""Placeholder entry point until its issue lands."""

import sys


def app() -> None:
    print("train: not implemented yet", file=sys.stderr)
    sys.exit(1)


main = app
