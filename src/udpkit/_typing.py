"""What the modules on ``udpkit ss``'s path need of :mod:`typing` at run time, without importing it.

Why: importing ``typing`` (and the ``re``, ``contextlib``... it pulls in) costs ~4 ms of a listing
that ``ss`` does in ~80 ms at 50,000 sockets (``bench/ss_bench.py``). Those modules import their
typing names under ``if TYPE_CHECKING:`` (``TYPE_CHECKING = False`` at run time; type checkers
read the name as true) and take these run-time stand-ins otherwise:

- :class:`NamedTuple`: the class syntax of ``typing.NamedTuple`` over ``collections.namedtuple``
  — the same tuple type, fields, defaults, methods and docstring;
- :func:`overload`: the decorator, as a no-op (the last definition, the real one, is what runs);
- :data:`Generic`: ``Generic[T]`` as a base that adds nothing.

The type checker never sees this module's stand-ins: it reads :mod:`typing`'s own.
"""

from __future__ import annotations

import collections

__all__ = ["Generic", "NamedTuple", "overload"]


class _NamedTupleMeta(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
        if namespace.get("_udpkit_root"):
            return super().__new__(mcs, name, bases, namespace)
        annotations = dict(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        fields = list(annotations)
        defaults = [namespace[field] for field in fields if field in namespace]
        made = collections.namedtuple(name, fields, defaults=defaults,  # type: ignore[misc]
                                      module=str(namespace.get("__module__")))
        for key, value in namespace.items():
            if key in ("__module__", "__qualname__", "__annotations__", "_udpkit_root") or key in fields:
                continue
            setattr(made, key, value)
        made.__qualname__ = str(namespace.get("__qualname__", name))
        made.__annotations__ = annotations
        return made


class NamedTuple(metaclass=_NamedTupleMeta):
    """Subclass it as ``typing.NamedTuple``; the class made is a ``collections.namedtuple``."""

    _udpkit_root = True


def overload(function: object) -> object:
    return function


class _GenericAlias:
    def __getitem__(self, _parameters: object) -> type:
        return _Nothing


class _Nothing:
    __slots__ = ()


Generic = _GenericAlias()
