"""What every ``limnet`` entry point shares (``limnet``, ``python -m napari_limnet.evaluation``, the
training module): bad input ends in one line on stderr and exit status 2, never a traceback.

Imports nothing heavy, so that any command's ``--help`` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

BAD_INPUT = 2  # argparse's own status for a bad command line


def run_command(name: str, run: Callable[[], int]) -> int:
    """Run one command; a ``ValueError`` or ``OSError`` (bad input, unreadable or unwritable file)
    becomes ``limnet NAME: error: MESSAGE`` and status 2. Bugs still show their traceback."""
    try:
        return run()
    except (ValueError, OSError) as exc:
        print(f"limnet {name}: error: {exc}", file=sys.stderr)
        return BAD_INPUT


def warn(name: str, text: str) -> None:
    """A result the user should look at before using it: ``limnet NAME: warning: TEXT``."""
    print(f"limnet {name}: warning: {text}", file=sys.stderr)
