"""Full-text search over cues: one tokenizer and one query language, two engines (SQLite FTS5, PostgreSQL).

Why normalise in Python: SQLite's ``unicode61`` and PostgreSQL's ``simple`` parser disagree at the edges
(diacritics, marks, scripts written without spaces), and a query must mean the same on a laptop's SQLite catalog
and on the shared PostgreSQL one. So every cue is stored with a ``body``: its words, case-folded, Latin/Greek/
Cyrillic diacritics removed, and each Han/kana character a word of its own (Chinese and Japanese are written
without spaces; one character per token makes a phrase query of consecutive characters find any word in them).
Both engines then only split ``body`` on spaces, so they index the same tokens; the query goes through the same
`tokens`.

Query language (`parse_query`): words must all occur in the cue (AND); ``"an exact phrase"``; ``word*`` matches
by prefix; ``a OR b`` either. Every token is made of letters, digits and marks only, so the engine query built
from it cannot carry syntax of its own, and it is passed as a bound parameter anyway.

Ranking: BM25 on SQLite (``bm25()``, negated so larger is better), ``ts_rank`` on PostgreSQL; the two scales
differ, which is why fusion with X-CLIP's moments uses ranks (see `xclip_search.fusion`). Ranking costs time per
matching line, and a very common word matches most lines of a library (at 100k lines, a word in two of three took
~110 ms to rank on the loaded 2-core development machine), so at most `MAX_RANKED` matching lines are ranked: the
first the engine reads. Below that (every selective query) the order is exact; above it the text says little
about where a moment is anyway, and a search stays within a few milliseconds of X-CLIP alone. Ranking is BM25's
cost per line read: at 100k cues, a word in many lines took 5.0 ms with 2,000 ranked, 2.5 ms with 1,000 and
1.5 ms with 500 (quiet 2-core machine); 1,000 keeps a fused search within 10 ms of X-CLIP alone
(`scripts/bench_query.py --text-tracks`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

FTS_TABLE = "cues_fts"  # SQLite only (the statements below spell it out)
#: the most matching lines a query ranks (see the module docstring)
MAX_RANKED = 1000

# Scripts written without spaces between words: each character is indexed as a word.
_CHAR_TOKEN_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # CJK Extensions B-F, compatibility supplement
    (0x0E00, 0x0E7F),  # Thai
)


def _char_token(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CHAR_TOKEN_RANGES)


def tokens(value: str) -> list[str]:
    """The words of `value` as both engines index them (see the module docstring)."""
    folded = unicodedata.normalize("NFKD", value.casefold())
    out: list[str] = []
    word: list[str] = []
    prev_base = ""
    for ch in folded:
        cat = unicodedata.category(ch)
        if cat == "Mn" and prev_base and ord(prev_base) < 0x0530:
            continue  # a diacritic on a Latin, Greek or Cyrillic letter: "café" -> "cafe"
        if _char_token(ch):
            if word:
                out.append("".join(word))
                word = []
            out.append(ch)
            prev_base = ch
        elif cat[0] in "LNM":
            word.append(ch)
            if cat[0] != "M":
                prev_base = ch
        else:
            if word:
                out.append("".join(word))
                word = []
            prev_base = ""
    if word:
        out.append("".join(word))
    return [unicodedata.normalize("NFC", t) for t in out]


def body(value: str) -> str:
    """The text stored for the full-text index: `tokens` joined by spaces."""
    return " ".join(tokens(value))


@dataclass(frozen=True)
class Term:
    """Consecutive tokens (one word or a phrase); `prefix`: the last token matches any word it begins."""

    tokens: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class TextQuery:
    """All `groups` must match; a group matches when any of its terms does."""

    groups: tuple[tuple[Term, ...], ...]

    def words(self) -> list[str]:
        """Every token of the query (what a page highlights)."""
        return [t for group in self.groups for term in group for t in term.tokens]


def parse_query(query: str) -> TextQuery | None:
    """The full-text reading of a search query, or None when it has no word to look for."""
    items: list[Term | str] = []  # terms, and the "OR" operator between them
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"':
            close = query.find('"', i + 1)
            close = n if close < 0 else close
            phrase = query[i + 1 : close]
            i = close + 1
            prefix = phrase.rstrip().endswith("*")
            toks = tuple(tokens(phrase))
            if toks:
                items.append(Term(toks, prefix))
            continue
        j = i
        while j < n and not query[j].isspace() and query[j] != '"':
            j += 1
        raw = query[i:j]
        i = j
        if raw == "OR":
            items.append("OR")
            continue
        toks = tuple(tokens(raw))
        if toks:
            items.append(Term(toks, raw.endswith("*")))
    groups: list[list[Term]] = []
    join_next = False
    for item in items:
        if item == "OR":
            join_next = bool(groups)
            continue
        assert isinstance(item, Term)
        if join_next:
            groups[-1].append(item)
        else:
            groups.append([item])
        join_next = False
    if not groups:
        return None
    return TextQuery(tuple(tuple(g) for g in groups))


def fts5_expression(query: TextQuery) -> str:
    """The query in SQLite FTS5's syntax (every token quoted; tokens hold no quote)."""

    def term(t: Term) -> str:
        return '"' + " ".join(t.tokens) + '"' + (" *" if t.prefix else "")

    return " AND ".join("(" + " OR ".join(term(t) for t in group) + ")" for group in query.groups)


def tsquery_expression(query: TextQuery) -> str:
    """The query in PostgreSQL's ``to_tsquery`` syntax (tokens quoted as lexemes; they hold no quote)."""

    def term(t: Term) -> str:
        lexemes = [f"'{tok}'" for tok in t.tokens]
        if t.prefix:
            lexemes[-1] += ":*"
        return "(" + " <-> ".join(lexemes) + ")"

    return " & ".join("(" + " | ".join(term(t) for t in group) + ")" for group in query.groups)


# -- DDL -------------------------------------------------------------------------------------------------------


def create(conn: Connection) -> None:
    """The full-text index over ``cues.body``: an FTS5 table kept in step by triggers (SQLite), or a GIN index
    on its ``simple`` tsvector (PostgreSQL). Idempotent."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE INDEX IF NOT EXISTS ix_cues_tsv ON cues USING gin (to_tsvector('simple'::regconfig, body))"
        )
        return
    for statement in _SQLITE_DDL:
        conn.exec_driver_sql(statement)


# Literal statements (no formatting): the FTS5 table reads ``body`` from ``cues`` (external content) and the
# triggers keep it in step with every insert, delete and update of a cue.
_SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS cues_fts USING fts5(body, content='cues', content_rowid='id', "
    "tokenize=\"unicode61 remove_diacritics 2 categories 'L* N* Co M*'\")",
    "CREATE TRIGGER IF NOT EXISTS cues_fts_insert AFTER INSERT ON cues BEGIN "
    "INSERT INTO cues_fts(rowid, body) VALUES (new.id, new.body); END",
    "CREATE TRIGGER IF NOT EXISTS cues_fts_delete AFTER DELETE ON cues BEGIN "
    "INSERT INTO cues_fts(cues_fts, rowid, body) VALUES ('delete', old.id, old.body); END",
    "CREATE TRIGGER IF NOT EXISTS cues_fts_update AFTER UPDATE ON cues BEGIN "
    "INSERT INTO cues_fts(cues_fts, rowid, body) VALUES ('delete', old.id, old.body); "
    "INSERT INTO cues_fts(rowid, body) VALUES (new.id, new.body); END",
)


# -- matching --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A cue the query matched and the engine's relevance (larger is better; scales differ by backend)."""

    cue_id: int
    score: float


def match(conn: Connection, query: TextQuery, *, limit: int, video_ids: Sequence[int] | None = None) -> list[Match]:
    """The best `limit` cues for `query`, best first (restricted to `video_ids` when given)."""
    params: dict[str, object] = {"scan": MAX_RANKED}
    pg = conn.dialect.name == "postgresql"
    params["q"] = tsquery_expression(query) if pg else fts5_expression(query)
    if video_ids is None:
        statement = text(_PG_MATCH if pg else _SQLITE_MATCH)
    else:
        if not video_ids:
            return []
        params["vids"] = [int(v) for v in video_ids]
        statement = text(_PG_MATCH_IN if pg else _SQLITE_MATCH_IN).bindparams(bindparam("vids", expanding=True))
    found = [Match(int(r[0]), float(r[1])) for r in conn.execute(statement, params).all()]
    found.sort(key=lambda m: (-m.score, m.cue_id))
    return found[: int(limit)]


# The first `MAX_RANKED` matching lines with their relevance, in the engine's own order (no ORDER BY: ranking every
# match of a common word is what costs); `match` sorts them.
_PG_SELECT = (
    "SELECT c.id, ts_rank(to_tsvector('simple'::regconfig, c.body), q.q) AS score "
    "FROM cues c, to_tsquery('simple'::regconfig, :q) AS q(q) "
    "WHERE to_tsvector('simple'::regconfig, c.body) @@ q.q"
)
_PG_MATCH = _PG_SELECT + " LIMIT :scan"
_PG_MATCH_IN = _PG_SELECT + " AND c.video_id IN :vids LIMIT :scan"
_SQLITE_MATCH = "SELECT rowid, -bm25(cues_fts) FROM cues_fts WHERE cues_fts MATCH :q LIMIT :scan"
_SQLITE_MATCH_IN = (
    "SELECT c.id, -bm25(cues_fts) FROM cues_fts JOIN cues c ON c.id = cues_fts.rowid "
    "WHERE cues_fts MATCH :q AND c.video_id IN :vids LIMIT :scan"
)

__all__ = [
    "FTS_TABLE",
    "MAX_RANKED",
    "Match",
    "Term",
    "TextQuery",
    "body",
    "create",
    "fts5_expression",
    "match",
    "parse_query",
    "tokens",
    "tsquery_expression",
]
