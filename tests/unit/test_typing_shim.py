"""udpkit._typing's NamedTuple builds the same tuple type as typing.NamedTuple."""

from __future__ import annotations

import pickle
import typing

from udpkit import _typing
from udpkit.addr import Endpoint


def shaped(base: type) -> type:
    """The same record class over ``base``: typing's NamedTuple, or the stand-in."""

    class Record(base):  # type: ignore[valid-type,misc]
        """A doc."""

        ip: str
        port: int = 0
        note: str | None = None

        def where(self) -> str:
            return f"{self.ip}:{self.port}"

        @property
        def high(self) -> bool:
            return self.port >= 1024

    return Record


Theirs, Ours = shaped(typing.NamedTuple), shaped(_typing.NamedTuple)  # type: ignore[arg-type]


def test_the_stand_in_builds_the_tuple_typing_builds() -> None:
    for cls in (Theirs, Ours):
        value = cls("192.0.2.1", 2000)
        assert isinstance(value, tuple) and value == ("192.0.2.1", 2000, None)
        assert cls._fields == ("ip", "port", "note") and cls._field_defaults == {"port": 0, "note": None}
        assert value.where() == "192.0.2.1:2000" and value.high
        assert value._replace(port=53).port == 53 and value._asdict()["ip"] == "192.0.2.1"
        assert cls.__doc__ == "A doc." and cls.__name__ == cls.__qualname__.rpartition(".")[2]
        assert repr(value) == f"{cls.__name__}(ip='192.0.2.1', port=2000, note=None)"
        assert list(cls.__annotations__) == ["ip", "port", "note"]


def test_records_made_with_it_pickle_and_compare_as_tuples() -> None:
    ep = Endpoint("::1", 123, 10)
    assert pickle.loads(pickle.dumps(ep)) == ep and str(ep) == "[::1]:123"
    assert type(ep).__module__ == "udpkit.addr" and hash(ep) == hash(("::1", 123, 10, None))
