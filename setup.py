"""Build of the optional C extension `mindoo_p2p._seal_chain` (see mindoo_p2p/native_seal.py).

Everything else about the package is in pyproject.toml. The extension is optional: without a C
compiler the install goes on and entries are sealed in Python (slower, same bytes)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mindoo_p2p._seal_chain",
            sources=["mindoo_p2p/_seal_chain.c"],
            extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror=vla"],
            optional=True,
        )
    ]
)
