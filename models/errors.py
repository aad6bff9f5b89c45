"""UserError: a mistake the user can fix, said in one sentence without a traceback.

It lives here, in the lowest layer that raises it, so that models/ never has to
import training/ to report a bad device, dtype or checkpoint; training/ and the
command lines take it from `training.errors`, which is this same class.
"""


class UserError(Exception):
    """A problem with the user's input (config, checkpoint, problem file, device).

    The message is one sentence that says what is wrong and what to do.
    """
