"""The grammar of a yt-dlp format selector, checked at the API before anything reaches a downloader.

    selector    := alternative ("," alternative)*
    alternative := merge ("/" merge)*
    merge       := term ("+" term)*
    term        := "(" selector ")" filter* | name filter* | filter+
    name        := [A-Za-z0-9_.*-]+                       (best, bv*, ba, mp4, 137, best.2, …)
    filter      := "[" key op "?"? value "]"             (op: = != < <= > >= ^= $= *=, a string op negated
                                                           with "!"; ~= is refused)
    value       := a quoted string | [A-Za-z0-9_.-]+        (480, 50M, mp4, avc1.4d401e, …)

yt-dlp parses the selector again (and refuses what it does not know); this keeps malformed and hostile text out
of the event stream with a message naming the place.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9_.*-]+")
_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_VALUE = re.compile(r"[\w.-]+")
_OPS = ("!^=", "!$=", "!*=", "!~=", "!=", "<=", ">=", "^=", "$=", "*=", "~=", "=", "<", ">")
MAX_DEPTH = 8


class FormatError(ValueError):
    pass


def check_format(text: str) -> None:
    """Raise FormatError naming the position of the first thing that is not a format selector."""
    parser = _Parser(text.replace(" ", ""))
    parser.selector(0)
    if parser.pos != len(parser.text):
        parser.fail("unexpected")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> None:
        found = self.text[self.pos : self.pos + 10] or "the end"
        raise FormatError(f"{what} {found!r} at position {self.pos + 1}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def selector(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail("nested too deep at")
        self.alternative(depth)
        while self.peek() == ",":
            self.pos += 1
            self.alternative(depth)

    def alternative(self, depth: int) -> None:
        self.merge(depth)
        while self.peek() == "/":
            self.pos += 1
            self.merge(depth)

    def merge(self, depth: int) -> None:
        self.term(depth)
        while self.peek() == "+":
            self.pos += 1
            self.term(depth)

    def term(self, depth: int) -> None:
        if self.peek() == "(":
            self.pos += 1
            self.selector(depth + 1)
            if self.peek() != ")":
                self.fail("expected ')' but found")
            self.pos += 1
        elif name := _NAME.match(self.text, self.pos):
            self.pos = name.end()
        elif self.peek() != "[":
            self.fail("expected a format name, '(' or '[' but found")
        while self.peek() == "[":
            self.filter()

    def filter(self) -> None:
        self.pos += 1  # "["
        key = _KEY.match(self.text, self.pos)
        if key is None:
            self.fail("expected a field name but found")
        self.pos = key.end()
        op = next((op for op in _OPS if self.text.startswith(op, self.pos)), None)
        if op is None:
            self.fail("expected a comparison (=, !=, <, <=, >, >=, ^=, $=, *=) but found")
        if op.endswith("~="):
            self.fail("regex filters (~=) are not allowed:")
        self.pos += len(op)
        if self.peek() == "?":
            self.pos += 1
        quote = self.peek()
        if quote in ("'", '"'):
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                self.fail("unterminated quote at")
            self.pos = end + 1
        else:
            value = _VALUE.match(self.text, self.pos)
            if value is None:
                self.fail("expected a value but found")
            self.pos = value.end()
        if self.peek() != "]":
            self.fail("expected ']' but found")
        self.pos += 1
