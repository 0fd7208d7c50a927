"""Imports LXT's efficient rules (`lxt.efficient.rules`, `lxt.efficient.patches`) without
`lxt/__init__.py` and `lxt/efficient/__init__.py`, which import every model patch and with
them `transformers`, `open_clip` and `torchvision` (not installed for the tests; LXT itself is
installed with `pip install --no-deps lxt`). The two modules need only torch."""

import importlib.util
import sys
import types


def import_lxt():
    """`(rules, patches)` modules of LXT's efficient implementation; ImportError if absent."""
    if "lxt.efficient.rules" in sys.modules and "lxt.efficient.patches" in sys.modules:
        return sys.modules["lxt.efficient.rules"], sys.modules["lxt.efficient.patches"]
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lxt is not installed (pip install --no-deps lxt)")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (("lxt", root), ("lxt.efficient", f"{root}/efficient")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
    import lxt.efficient.patches as patches
    import lxt.efficient.rules as rules

    return rules, patches
