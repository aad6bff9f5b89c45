"""Errors a user can fix. The CLIs print them as one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (config, checkpoint, problem file, device).

    The message is one sentence that says what is wrong and what to do.
    """
