"""`training.problems`, the older name of `training.data.problems`: both name the same module."""

import sys

from training.data import problems as _module

sys.modules[__name__] = _module
