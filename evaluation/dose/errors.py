"""The dose evaluation's errors: bad input, said in one line naming the file(s) (a user error, exit 2)."""
from __future__ import annotations

INSTALL_HINT = ('install it with: bash scripts/setup.sh (or pip install --no-deps pyradplan==0.5.0 and the pins '
                'listed in requirements.txt; docs/dose.md)')


class DoseError(ValueError):
    """Bad input for the dose evaluation (a synthetic CT off the CT's grid, no CT, an empty or misplaced target);
    ``str(e)`` is one line naming the file(s). A ValueError, so util.cli.run_cli prints it and exits 2."""


class DoseEngineMissing(DoseError):
    """pyRadPlan, or one of the packages its dose path needs, cannot be imported; the message says how to install
    it."""
