"""Renderings that repeat across flag variants, rendered once.

The check renders each template with every combination of the flags (162 of them), but a template
reads only some flags, and often only on some branches: a text about sedation never looks at the
diabetes answer once sedation is "no". A rendering depends only on the values it read, so each
rendering notes which flags it read (`appointment.sedation`, `appointment["sedation"]`,
`appointment.get(...)`), and a later variant that agrees on all of those is the same text.
Anything that could see every value at once (iterating the items, printing or comparing the whole
mapping, `tojson`) counts as reading them all, so nothing is ever assumed that a template could
tell apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

Result = TypeVar("Result")
_ALL = object()  # a read of the whole mapping

# Methods of dict that show values other than by one key: each counts as reading every flag.
_WHOLE = (
    "items", "values", "copy", "pop", "popitem", "setdefault", "update", "clear",
    "__repr__", "__eq__", "__ne__", "__or__", "__ror__", "__ior__", "__reversed__",
    "__reduce__", "__reduce_ex__", "__setitem__", "__delitem__",
)  # fmt: skip


def _reading_dict(watched: Collection[str], reads: set[object]) -> type[dict[str, Any]]:
    """A dict type that adds to `reads` each watched key read by one key, and _ALL on any other
    look at its values. It passes for a plain dict in what a template can see: its type's name
    (in Jinja's error messages), repr and attributes are dict's own."""

    def getitem(self: dict[str, Any], key: str) -> Any:
        if key in watched:
            reads.add(key)
        return dict.__getitem__(self, key)

    def get(self: dict[str, Any], key: str, default: Any = None) -> Any:
        if key in watched:
            reads.add(key)
        return dict.get(self, key, default)

    def iterate(self: dict[str, Any]) -> Iterator[str]:
        # Defined so that C code copying the mapping ({**d}, dict(d)) goes through keys() and
        # __getitem__ instead of reading the values directly.
        return dict.__iter__(self)

    def whole(name: str) -> Callable[..., Any]:
        method = getattr(dict, name)

        def read_all(self: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            reads.add(_ALL)
            return method(self, *args, **kwargs)

        read_all.__name__ = name
        return read_all

    namespace: dict[str, Any] = {name: whole(name) for name in _WHOLE}
    namespace |= {
        "__slots__": (),
        "__module__": "builtins",
        "__qualname__": "dict",
        "__getitem__": getitem,
        "get": get,
        "__iter__": iterate,
        "__hash__": None,
    }
    return type("dict", (dict,), namespace)


class FlagMemo:
    """Renderings of one template in one context, by the values of the flags each one read."""

    def __init__(self, flag_names: Collection[str]) -> None:
        self._names = tuple(flag_names)
        self._known: list[tuple[tuple[tuple[str, object], ...], Any]] = []

    def render(
        self,
        details: Mapping[str, object],
        flags: Mapping[str, object],
        render: Callable[[dict[str, Any]], Result],
    ) -> Result:
        """`render(details | flags)`, or what an earlier call gave for flags that agree on
        every flag that call's rendering read. A rendering that raises is not remembered."""
        for read, result in self._known:
            if all(flags[name] == value for name, value in read):
                found: Result = result
                return found
        reads: set[object] = set()
        tracked = _reading_dict(self._names, reads)({**details, **flags})
        result = render(tracked)
        names = self._names if _ALL in reads else [n for n in self._names if n in reads]
        self._known.append((tuple((name, flags[name]) for name in names), result))
        return result
