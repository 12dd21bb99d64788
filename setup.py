"""The one thing pyproject.toml cannot say: udpkit's optional C extension (recvmmsg/sendmmsg).

``optional=True``: without a C compiler or Python's headers the build goes on without it, and
``udpkit.net.mmsg`` uses its pure-Python fallbacks (``udpkit --debug listen`` says which).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("udpkit.net._mmsg", ["src/udpkit/net/_mmsg.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
