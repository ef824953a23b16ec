"""The optional C accelerator of the data plane's hot path (`telepresence._native`).

A control tick sends and receives one joint message each way, so the functions that encode,
decode, seal and open a joint message of the fused layout (``docs/protocol.md`` §4) are the
code every datagram runs. The extension holds C versions of exactly those four, each a drop-in
for a Python function of the package that stays the reference:

=================================  ==========================================================
C                                  Python
=================================  ==========================================================
``decode_joints(data)``            ``telepresence.wire.codec._decode_joints_py``
``encode_joints(...)``             ``telepresence.wire.codec._encode_joints_fast``
``seal_joints(...)``               the in-place branch of ``telepresence.security.Sealer.seal``
``open_sealed(...)``               ``telepresence.security._open_well_formed``
=================================  ==========================================================

Each returns None for anything but the one shape it takes, and the caller then runs its general
Python path, which handles every other message and words every error: the wire format, the
errors and the results are the same with or without the extension (the tests run both and
compare them). It is built by ``pip install`` when a C compiler is there (``setup.py``); when it
is not, the package runs in Python alone, about 10 µs slower per secure round trip in the
benchmarks (docs/benchmarks.md §5).

``TELEPRESENCE_PURE_PYTHON=1`` in the environment leaves the extension unloaded, to measure or
debug the Python paths.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["IMPLEMENTATION", "UNAVAILABLE", "label", "module"]

ENV_PURE_PYTHON = "TELEPRESENCE_PURE_PYTHON"


def _load() -> tuple[ModuleType | None, str | None]:
    if os.environ.get(ENV_PURE_PYTHON, "").strip() not in ("", "0"):
        return None, f"{ENV_PURE_PYTHON} is set"
    try:
        return importlib.import_module("telepresence._native"), None
    except ImportError as exc:  # not built (no compiler at install time) or not loadable
        return None, f"not built ({exc})"


module, UNAVAILABLE = _load()
"""The extension module, or None and why not."""
IMPLEMENTATION = "c" if module is not None else "python"
"""What runs the hot path: ``c`` (the extension) or ``python``."""


def label(implementation: str) -> str:
    """How a report names an implementation (``c`` or ``python``, as in `IMPLEMENTATION`)."""
    return "C" if implementation == "c" else "Python"
