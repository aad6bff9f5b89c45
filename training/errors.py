"""Errors a user can fix. The CLIs print them as one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (config, checkpoint, problem file, device).

    The message is one sentence that says what is wrong and what to do.
    """


def run_cli(run, *args, interrupted: str = "interrupted") -> int:
    """Call a CLI's `run(*args)`; a user's mistake becomes one `error:` line and exit status 2."""
    import sys
    import warnings

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
