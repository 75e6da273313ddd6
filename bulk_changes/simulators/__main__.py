"""``python -m bulk_changes.simulators [--host] [--jasper-port] ... [--seed-csv FILE]``."""

from __future__ import annotations

import argparse
import sys

from bulk_changes.simulators.runner import add_arguments, serve_forever


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="python -m bulk_changes.simulators",
            description="Run the Jasper, Telegence and Rev.io simulators.",
        )
    )
    return serve_forever(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
