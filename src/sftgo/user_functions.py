"""Your own code by name, ``"my_module:my_function"``: how ``--scorer`` and ``--token_weight`` import a function the
user wrote (imported with :func:`importlib.import_module`; ``my_module`` must be importable in every process, e.g. on
``PYTHONPATH``). Importable without torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def is_function_name(name) -> bool:
    """Whether ``name`` has the form ``module:function`` (a colon; the parts are checked by :func:`split_name`)."""
    return isinstance(name, str) and ":" in name


def split_name(name: str, what: str, error: type[Exception]) -> tuple[str, str]:
    """``(module, function)`` of ``"module:function"``; ``error`` (``"<what> 'name': use the form ..."``) otherwise."""
    module_name, _, fn_name = name.partition(":")
    if not module_name or not fn_name:
        raise error(f"{what} {name!r}: use the form 'my_module:my_function'")
    return module_name, fn_name


def import_function(name: str, what: str, error: type[Exception]) -> Callable:
    """The function ``"module:function"`` names, imported now; ``error`` with one line naming ``what`` (the setting),
    the module or function that is missing, and the fix."""
    module_name, fn_name = split_name(name, what, error)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{what} {name!r}: cannot import module {module_name!r} ({e}); is it on PYTHONPATH?") from e
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise error(f"{what} {name!r}: module {module_name!r} has no function {fn_name!r}")
    return fn
