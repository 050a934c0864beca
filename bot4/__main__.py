"""The ``bot4`` command's entry point (also ``python -m bot4``).

A Ctrl-C is deferred (counted, raised once the command's modules are in:
:mod:`bot4.interrupts`) before anything else imports, so it can neither be
swallowed in an import nor come out of a C extension's init as an ``ImportError``; then
:func:`bot4.cli.main` runs (exit codes: :func:`bot4.cli_support.run_parsed`).
"""

from __future__ import annotations

import sys

from bot4 import interrupts


def main() -> int:
    before = interrupts.defer()
    try:
        from bot4.cli import main as cli_main

        return cli_main()
    finally:
        interrupts.restore(before)


if __name__ == "__main__":
    sys.exit(main())
