"""lrpgraph: compile LRP explanations of residual image classifiers into ONNX graphs."""

import os as _os

__version__ = "0.1.0"

# Installed, rules/ is the subpackage lrpgraph/rules. Run from a source checkout (python -m
# lrpgraph in the repository, no install), it sits beside this package: look there too.
if not _os.path.isdir(_os.path.join(__path__[0], "rules")):
    _root = _os.path.dirname(__path__[0])
    if _os.path.isfile(_os.path.join(_root, "rules", "__init__.py")):
        __path__.append(_root)

from .config import VARIANTS, Config, Preprocess, preset  # noqa: E402
from .errors import LrpGraphError, UnsupportedOpsError  # noqa: E402

__all__ = ["Config", "Preprocess", "VARIANTS", "preset", "LrpGraphError",
           "UnsupportedOpsError", "build", "build_explainer", "Explainer", "__version__"]


def __getattr__(name):
    # build pulls in onnx-graphsurgeon; keep `import lrpgraph` light for explain-only users.
    if name in ("build", "build_explainer"):
        from . import driver as _build

        return getattr(_build, name)
    if name == "Explainer":
        from .explain import Explainer

        return Explainer
    raise AttributeError(name)
