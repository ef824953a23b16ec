"""The optional C accelerator of the data plane (everything else is in pyproject.toml).

``telepresence._native`` is built when a C compiler is there; when it is not, or the build
fails, the package installs without it and runs the same code paths in Python
(``telepresence/native.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "telepresence._native",
            sources=["telepresence/_native.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
