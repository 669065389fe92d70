"""A damaged SQLite catalog becomes one `CatalogCorruptError` naming the file and the way back.

SQLite reports a truncated or overwritten database file only when a page is read, which can be anywhere: on
connecting (the WAL pragma), in the migration check, or in the middle of a search. An engine-wide
``handle_error`` hook turns each of those into the same one-line error instead of a SQLAlchemy traceback.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

from ..errors import CatalogCorruptError

# sqlite3 error names (Python 3.11: ``exc.sqlite_errorname``) and messages that mean a damaged file.
_DAMAGE_NAMES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_DAMAGE_TEXT = ("malformed", "not a database", "file is encrypted", "disk image")


def is_damage(exc: BaseException) -> bool:
    """Whether a DBAPI error says the SQLite file itself is damaged (not locked, not missing)."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    text = str(exc).lower()
    return name.startswith(_DAMAGE_NAMES) or any(t in text for t in _DAMAGE_TEXT)


def damaged_catalog(path: str, exc: BaseException) -> CatalogCorruptError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CatalogCorruptError(
        f"The catalog {path} is damaged ({first})",
        hint=(
            f"Check it with: sqlite3 {path} 'PRAGMA integrity_check'. Put back a copy you kept of it, or move "
            "the index directory aside and rebuild it with 'xclip-search index' over the same folders."
        ),
    )


def guard_sqlite(engine: Engine) -> None:
    """Raise `CatalogCorruptError` for every statement or connection that finds the database file damaged."""
    path = str(engine.url.database or "")

    def translate(context: Any) -> None:
        orig = context.original_exception
        if orig is not None and is_damage(orig):
            raise damaged_catalog(path, orig) from orig

    event.listen(engine, "handle_error", translate)
