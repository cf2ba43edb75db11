"""Entry points report bad input as one clear line, not a traceback from deep inside."""
from __future__ import annotations

import os
import sys
from typing import Callable

# what our own checks raise for bad input (files, options, data); anything else is a bug and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError)


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main()``; a user error exits with ``<program>: error: <message>`` (status 2).

    ``--verbose`` on the command line shows the full traceback as well.
    """
    try:
        main()
    except USER_ERRORS as exc:
        if '--verbose' in sys.argv:
            raise
        sys.exit(f'{os.path.basename(sys.argv[0])}: error: {exc}\n(add --verbose for the full traceback)')
