"""A shell-glob match in SQL on both catalog backends: SQLite's ``GLOB``, a regular expression on PostgreSQL.

``path~*/matches/*`` must select the same rows whichever database holds the catalog: case-sensitive, ``*``
any run of characters (``/`` included), ``?`` one character, ``[...]`` a class (``[^...]`` negated), exactly
SQLite's GLOB. A class may also be negated the POSIX shell's way, ``[!...]``: `normalize_glob` rewrites it to
``[^...]`` first, so both spellings select the same rows on every face (command line, Python API, HTTP); a
literal ``!`` or ``^`` goes anywhere in a class but first. PostgreSQL has no GLOB, so there the pattern is
translated to an anchored POSIX regex and matched with ``~``. The value is bound as a parameter on both, never
spliced into the SQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_SPECIAL = set(".^$|()[]{}*+?\\")


def normalize_glob(pattern: str) -> str:
    """``[!...]`` (POSIX shell) as ``[^...]`` (SQLite GLOB); everything else unchanged."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                out.append("[^")
                j += 1
            else:
                out.append("[")
            if j < n and pattern[j] == "]":  # a leading ] is a member, not the end
                out.append("]")
                j += 1
            while j < n and pattern[j] != "]":
                out.append(pattern[j])
                j += 1
            if j < n:
                out.append("]")
            i = j + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> str:
    """SQLite GLOB semantics as an anchored PostgreSQL (ARE) regular expression."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: SQLite's GLOB matches nothing at all
                return "a^"
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\")
                if body.startswith("]"):
                    body = "\\]" + body[1:]
                out.append("[" + ("^" if negate else "") + body + "]")
                i = j
        else:
            out.append("\\" + ch if ch in _SPECIAL else ch)
        i += 1
    out.append("$")
    return "".join(out)


class _Glob(FunctionElement[bool]):
    type = Boolean()
    inherit_cache = True
    name = "glob_match"


@compiles(_Glob)
def _compile_glob(element: _Glob, compiler: Any, **kw: Any) -> str:
    column, pattern, _regex = list(element.clauses)
    return f"{compiler.process(column, **kw)} GLOB {compiler.process(pattern, **kw)}"


@compiles(_Glob, "postgresql")
def _compile_glob_pg(element: _Glob, compiler: Any, **kw: Any) -> str:
    column, _pattern, regex = list(element.clauses)
    return f"{compiler.process(column, **kw)} ~ {compiler.process(regex, **kw)}"


def glob_match(column: Any, pattern: str) -> ColumnElement[bool]:
    """``column GLOB pattern`` on SQLite, the equivalent regex match on PostgreSQL (``[!...]`` negates too)."""
    pattern = normalize_glob(pattern)
    return _Glob(column, literal(pattern), literal(glob_to_regex(pattern)))
