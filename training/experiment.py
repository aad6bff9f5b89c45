"""`training.experiment`, the older name of `training.evaluation.experiment`: both name the same module (`python -m training.experiment` too)."""

import sys

from training.evaluation import experiment as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
