"""lrpgraph: compile LRP explanations of residual image classifiers into ONNX graphs."""

__version__ = "0.1.0"

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
