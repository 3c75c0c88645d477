"""Modules imported on first use, so that importing prefopt does not import torch.

The loss zoo is imported by recipe validation (``prefopt.config``), which must answer in well under a
second, but computing a loss needs torch (about two seconds to import). A loss module therefore
binds torch with :func:`lazy_import` instead of ``import torch``::

    if TYPE_CHECKING:
        import torch
    else:
        torch = lazy_import("torch")

Attribute access (``torch.sigmoid``, ``F.softplus``) imports the real module the first time and
then delegates to it; ``sys.modules`` is untouched until then, so ``"torch" in sys.modules`` still
tells whether torch was loaded. Nothing at module level may touch such a proxy (a default argument,
a constant, a decorator argument), or the import happens at once; annotations stay strings
(``from __future__ import annotations``).
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for module ``name`` that imports it on the first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"lazily imported {name!r}")
        self.__dict__["_lazy_module"] = None

    def _load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, attribute: str) -> Any:
        # only called for names not yet in the proxy's own __dict__: each is looked up once, then kept there,
        # so a loss's ``torch.sigmoid`` in a training step is a plain attribute read after the first call
        value = getattr(self._load(), attribute)
        self.__dict__[attribute] = value
        return value

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_lazy_module"] is not None else "not loaded yet"
        return f"<lazy module {self.__name__!r} ({state})>"


def lazy_import(name: str) -> Any:
    """A proxy for module ``name`` (dotted names too: ``"torch.nn.functional"``) imported on first use."""
    return LazyModule(name)
