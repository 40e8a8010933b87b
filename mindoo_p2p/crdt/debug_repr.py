"""A parser for Rust ``{:?}`` (Debug) output, as the binding's ``Patch.__repr__`` produces it.

The binding cannot convert some values to Python (counters, unknown value types, timestamps
outside Python's datetime range: it panics), and its ``Patch`` objects offer nothing but their
Debug text. This module turns that text into plain Python values so those values can still be
read. Grammar (whitespace between tokens is ignored)::

    value  := IDENT [ "(" items ")" | "{" fields "}" ] | NUMBER | STRING
            | "[" items "]" | "(" items ")" | ".."
    items  := [ value { "," value } [","] ]
    fields := [ IDENT ":" value { "," IDENT ":" value } [","] ] [ ".." ]

Strings are Rust-escaped (``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\'``,
``\\u{hex}``), so user text can never be mistaken for structure. Input is bounded in length and
nesting depth; anything else raises :class:`DecodeError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError

MAX_DEPTH = 256
MAX_TEXT = 256 * 1024 * 1024

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?[0-9][0-9a-zA-Z_.+-]*|-inf\b|-NaN\b)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<dots>\.\.)
      | (?P<punct>[()\[\]{},:])
    )""",
    re.VERBOSE | re.DOTALL,
)
_SPACE = re.compile(r"\s*")
_ESCAPE = re.compile(r"\\(u\{([0-9a-fA-F]{1,6})\}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class Node:
    """``Name(args...)``, ``Name { fields }``, a bare ``Name`` or an anonymous tuple (name "")."""

    name: str
    args: tuple[Any, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)


ELLIPSIS = Node("..")


def _unescape(quoted: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(2) is not None:
            code = int(match.group(2), 16)
            if code > 0x10FFFF:
                raise DecodeError(f"debug text: bad unicode escape {match.group(0)}")
            return chr(code)
        char = match.group(1)
        if char not in _SIMPLE_ESCAPES:
            raise DecodeError(f"debug text: unknown escape \\{char}")
        return _SIMPLE_ESCAPES[char]

    return _ESCAPE.sub(replace, quoted[1:-1])


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError as exc:
        raise DecodeError(f"debug text: bad number {text!r}") from exc


class _Parser:
    def __init__(self, text: str) -> None:
        if len(text) > MAX_TEXT:
            raise DecodeError("debug text too long")
        self._text = text
        self._pos = 0
        self._peeked: tuple[str, str] | None = None

    def peek(self) -> tuple[str, str]:
        if self._peeked is None:
            self._pos = _SPACE.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos >= len(self._text):
                self._peeked = ("end", "")
            else:
                match = _TOKEN.match(self._text, self._pos)
                if match is None or match.lastgroup is None:
                    raise DecodeError(f"debug text: unexpected character at {self._pos}")
                self._pos = match.end()
                self._peeked = (match.lastgroup, match.group(match.lastgroup))
        return self._peeked

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self._peeked = None
        return token

    def expect(self, text: str) -> None:
        kind, value = self.take()
        if value != text or kind not in ("punct", "dots"):
            raise DecodeError(f"debug text: expected {text!r}, got {value!r}")

    def accept(self, text: str) -> bool:
        kind, value = self.peek()
        if kind in ("punct", "dots") and value == text:
            self.take()
            return True
        return False

    def items(self, close: str, depth: int) -> tuple[Any, ...]:
        out: list[Any] = []
        while not self.accept(close):
            out.append(self.value(depth))
            if not self.accept(","):
                self.expect(close)
                break
        return tuple(out)

    def fields(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while not self.accept("}"):
            if self.accept(".."):
                self.expect("}")
                break
            kind, name = self.take()
            if kind != "ident":
                raise DecodeError(f"debug text: expected a field name, got {name!r}")
            self.expect(":")
            out[name] = self.value(depth)
            if not self.accept(","):
                self.expect("}")
                break
        return out

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError("debug text nested too deeply")
        kind, text = self.take()
        if kind == "string":
            return _unescape(text)
        if kind == "number":
            return _number(text)
        if kind == "dots":
            return ELLIPSIS
        if kind == "ident":
            if text in ("true", "false"):
                return text == "true"
            if self.accept("("):
                return Node(text, args=self.items(")", depth + 1))
            if self.accept("{"):
                return Node(text, fields=self.fields(depth + 1))
            return Node(text)
        if text == "[":
            return list(self.items("]", depth + 1))
        if text == "(":
            return Node("", args=self.items(")", depth + 1))
        raise DecodeError(f"debug text: unexpected {text!r}")


def parse_debug(text: str) -> Any:
    """Parse one Debug-formatted value; the whole text must be consumed."""
    parser = _Parser(text)
    result = parser.value(0)
    if parser.peek()[0] != "end":
        raise DecodeError("debug text: trailing tokens")
    return result
