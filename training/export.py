"""`training.export`, the older name of `training.runtime.export`: both name the same module (`python -m training.export` too)."""

import sys

from training.runtime import export as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
