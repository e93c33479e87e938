"""The one compiled part: row stepping in the response scanner (mysqlgate/protocol/_scan.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler
pip still installs mysqlgate, which then runs the pure-Python fallback (slower on large
results; the startup log says which one runs).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mysqlgate.protocol._scan",
            sources=["mysqlgate/protocol/_scan.c"],
            optional=True,
        )
    ]
)
