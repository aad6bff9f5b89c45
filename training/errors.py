"""Errors a user can fix. The command lines print them as one line (`training.runtime.cli.run_cli`).

The class is defined in `models.errors`, below every layer that raises it;
this module is its name in training/ and above.
"""

from models.errors import UserError

__all__ = ["UserError"]
