"""The SQL of the PostgreSQL backend: named queries and numbered migrations.

Both live in ``.sql`` files next to this module (``queries.sql``, ``durable.sql`` for
steps, waits and tokens, ``ops.sql`` for the operations surface, ``limits.sql`` for flow
control, ``workflows.sql`` for workflows) and are read once per
process. The only text ever substituted into them is the schema, as a quoted identifier
built from the validated ``schema`` setting (``{schema}``), and fixed fragments from the
same files: in the claim, one of three channel filters; in the complete steps, those of
a batch with a durable wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from conveyor.backends.sql import load_queries
from conveyor.settings import validate_identifier

__all__ = [
    "Migration",
    "Queries",
    "migration_script",
    "migrations",
    "native",
    "quote_schema",
]

_PACKAGE = __package__ or "conveyor.backends.postgres"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
CLAIM_FILTERS = ("all", "one", "many")


def quote_schema(schema: str) -> str:
    """The schema as a quoted SQL identifier (the setting is validated, so no quote can
    appear inside it; validated again here because this text is spliced into SQL)."""
    return '"' + validate_identifier(schema, "schema") + '"'


def strip_comments(sql: str) -> str:
    """Drop ``--`` comments (outside string literals) and blank lines.

    psycopg finds ``%(name)s`` placeholders anywhere in the text, comments included, so
    the documentation in the ``.sql`` files must not reach the driver.
    """
    lines = []
    for line in sql.splitlines():
        in_string = False
        cut = len(line)
        for i, ch in enumerate(line):
            if ch == "'":
                in_string = not in_string
            elif not in_string and line.startswith("--", i):
                cut = i
                break
        code = line[:cut].rstrip()
        if code.strip():
            lines.append(code)
    return "\n".join(lines)


_PLACEHOLDER = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s|%%")


@cache
def native(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with psycopg's ``%(name)s`` placeholders turned into PostgreSQL's own
    ``$n`` (a repeated name reuses its number), and the names in ``$n`` order.

    Run through a raw cursor with the values in that order, a statement skips psycopg's
    per-call query parsing, which it does not cache for statements over 4 kB (the
    claim and complete statements are longer).
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PLACEHOLDER.sub(number, sql), tuple(names)


@cache
def _raw_queries() -> dict[str, str]:
    merged: dict[str, str] = {}
    for filename in ("queries.sql", "durable.sql", "ops.sql", "limits.sql", "workflows.sql"):
        found = load_queries(_PACKAGE, filename)
        if merged.keys() & found.keys():  # pragma: no cover - a name must be unique
            raise RuntimeError(f"queries named twice: {sorted(merged.keys() & found.keys())}")
        merged.update(found)
    return merged


def _no_blank_lines(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if line.strip())


# The placeholders of complete_steps, and what fills them in a batch with a wait (the
# complete_wait_* fragments of durable.sql) and in any other (complete_input, nothing).
_WAIT_SLOTS = ("input", "gate", "columns", "set", "tail")


class Queries:
    """The named queries with the schema substituted.

    Three are assembled from shared steps (CTE lists) in ``queries.sql``: ``claim``
    (claim_steps + claim_select, in three channel-filter variants), ``complete_many``
    (complete_steps + complete_select) and ``complete_claim`` (both step lists in one
    statement, then complete_claim_select, in the three variants). The complete ones
    come twice: as they are, and for a batch with an outcome to ``waiting``
    (``complete_wait_*``: the fragments of ``durable.sql`` filled in).
    """

    def __init__(self, schema: str):
        quoted = quote_schema(schema)
        raw = {
            name: strip_comments(text.replace("{schema}", quoted))
            for name, text in _raw_queries().items()
        }
        self._sql = {
            name: text for name, text in raw.items() if not name.startswith(("claim", "complete_"))
        }
        steps = {"": raw["complete_steps"], "wait_": raw["complete_steps"]}
        for slot in _WAIT_SLOTS:
            plain = raw["complete_input"] if slot == "input" else ""
            wait = raw[f"complete_wait_{slot}"]
            key = "{wait_" + slot + "}"
            steps[""] = steps[""].replace(key, plain)
            steps["wait_"] = steps["wait_"].replace(key, wait)
        steps = {kind: _no_blank_lines(text) for kind, text in steps.items()}
        for kind, complete in steps.items():
            self._sql[f"complete_{kind}many"] = f"WITH {complete}\n{raw['complete_select']}"
        for variant in CLAIM_FILTERS:
            claim = raw["claim_steps"].replace("{channel_filter}", raw[f"claim_filter_{variant}"])
            self._sql[f"claim_{variant}"] = f"WITH {claim}\n{raw['claim_select']}"
            for kind, complete in steps.items():
                self._sql[f"complete_{kind}claim_{variant}"] = (
                    f"WITH {complete},\n{claim}\n{raw['complete_claim_select']}"
                )
        for kind, complete in steps.items():  # a claim with limits: see limits.py
            self._sql[f"complete_{kind}limited"] = (
                f"WITH {complete}\n{raw['limited_complete_claim_select']}"
            )

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def claim(
        self, channels: tuple[str, ...] | None, *, complete: bool = False, wait: bool = False
    ) -> str:
        """The claim for a worker's channel filter: every channel, exactly one (an
        ordered scan of the channel index) or several; with ``complete``, preceded by
        the steps of ``complete_many`` in the same statement (``wait``: those of a batch
        with an outcome to ``waiting``)."""
        variant = "all" if channels is None else "one" if len(channels) == 1 else "many"
        if not complete:
            return self._sql[f"claim_{variant}"]
        return self._sql[f"complete_{'wait_' if wait else ''}claim_{variant}"]

    def complete(self, *, wait: bool = False) -> str:
        """``complete_many`` (``wait``: for a batch with an outcome to ``waiting``)."""
        return self._sql["complete_wait_many" if wait else "complete_many"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration file, e.g. ``0001_init.sql``."""

    version: int
    name: str
    template: str  # the file's text, {schema} not yet substituted

    def sql(self, schema: str) -> str:
        """The migration's SQL for ``schema``."""
        return self.template.replace("{schema}", quote_schema(schema))


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in version order."""
    folder = resources.files(_PACKAGE).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"postgres migrations must be numbered 1..n, found {versions}")
    return tuple(found)


def bootstrap_sql(schema: str) -> str:
    """The schema and its ``schema_migrations`` table (idempotent)."""
    quoted = quote_schema(schema)
    return (
        f"CREATE SCHEMA IF NOT EXISTS {quoted};\n"
        f"CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (\n"
        "    version    integer     PRIMARY KEY,\n"
        "    name       text        NOT NULL,\n"
        "    applied_at timestamptz NOT NULL DEFAULT now()\n"
        ");\n"
    )


def lock_sql(schema: str) -> str:
    """A transaction-scoped advisory lock per schema: concurrent migrators queue up."""
    key = "conveyor.migrate." + validate_identifier(schema, "schema")
    return f"SELECT pg_advisory_xact_lock(hashtext('{key}'));"


def migration_script(schema: str) -> str:
    """The full migration as one SQL script a DBA can review and run (``psql -f``).

    Idempotent like :meth:`PostgresBackend.migrate`: it takes the same advisory lock and
    applies, in one transaction, only the versions ``schema_migrations`` lacks.
    """
    validate_identifier(schema, "schema")
    parts = [
        f"-- conveyor: PostgreSQL schema {quote_schema(schema)}",
        "-- Generated by `conveyor migrate --sql`; safe to run more than once.",
        "BEGIN;",
        lock_sql(schema),
        bootstrap_sql(schema),
    ]
    quoted = quote_schema(schema)
    for m in migrations():
        body = m.sql(schema)
        tag = "$conveyor_migration$"
        if tag in body:  # pragma: no cover - guarded so a future file cannot break quoting
            raise RuntimeError(f"migration {m.version} contains {tag}")
        parts.append(
            f"-- {m.version:04d}_{m.name}\n"
            "DO $conveyor$\nBEGIN\n"
            f"  IF NOT EXISTS (SELECT 1 FROM {quoted}.schema_migrations"
            f" WHERE version = {m.version}) THEN\n"
            f"    EXECUTE {tag}\n{body}\n{tag};\n"
            f"    INSERT INTO {quoted}.schema_migrations (version, name)"
            f" VALUES ({m.version}, '{m.name}');\n"
            "  END IF;\nEND\n$conveyor$;"
        )
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"
