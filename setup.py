"""The one thing pyproject.toml cannot say: udpkit's optional C extensions (recvmmsg/sendmmsg, and
the lines of ``udpkit ss``'s table).

``optional=True``: without a C compiler or Python's headers the build goes on without them, and
``udpkit.net.mmsg`` uses its pure-Python fallbacks (``udpkit --debug listen`` says which), as
``udpkit.cli._sstable`` lays its lines out in Python.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
setup(ext_modules=[
    Extension("udpkit.net._mmsg", ["src/udpkit/net/_mmsg.c"], optional=True, extra_compile_args=FLAGS),
    Extension("udpkit.cli._sslines", ["src/udpkit/cli/_sslines.c"], optional=True, extra_compile_args=FLAGS),
])
