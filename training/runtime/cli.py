"""What the command lines (train.py, inference.py, `python -m training.evaluate`) share.

    return run_cli(run, args)                          # a UserError becomes one `error:` line
    check_flags(("count", "--n", args.n), ("budget", "--max-new-tokens", args.max_new_tokens))
    write_atomically(args.output, json.dumps(report) + "\\n")
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

from training.errors import UserError

# kind: (smallest valid value, what the message says)
_FLAG_RULES = {
    "count": (1, "must be at least 1"),
    "budget": (1, "must be positive"),
    "temperature": (0, "must be 0 (greedy) or positive"),
}


def run_cli(run, *args, interrupted: str = "interrupted") -> int:
    """Call a CLI's `run(*args)`; a user's mistake becomes one `error:` line and exit status 2."""
    from sandbox import SandboxUnavailable

    # Generated programs and tests are parsed many times a second; Python's SyntaxWarnings
    # about them ("invalid decimal literal", "invalid escape sequence") would land between
    # the progress bars. They say nothing about the run, so the CLIs do not print them.
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    try:
        return run(*args)
    except (UserError, SandboxUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def check_flags(*flags: tuple[str, str, object]) -> None:
    """Check numeric flags given as (kind, flag, value), in order; the first out of range is a UserError.

    Kinds: count (at least 1), budget (at least 1; None means not given), and
    temperature (0 is greedy, else positive).
    """
    for kind, flag, value in flags:
        minimum, rule = _FLAG_RULES[kind]
        if value is not None and value < minimum:
            raise UserError(f"{flag} {rule}, got {value}")


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same directory and a rename.

    A reader of `path` (or a run killed half-way) sees the old file or the new
    one, never half of it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}); choose a writable path") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
