"""Per-test database isolation for tests that use the test process's own database.

Rows a test (or a module's fixtures) creates are deleted when it ends, whatever it committed and whichever
process wrote them (workers, the embedded executor's threads): the highest primary key of every table is noted
before, and newer rows are deleted after, with foreign-key checks off for the delete. Older rows that came to
point at a deleted row (a project's active model, a task's state) get NULL there, or go too when the column
may not be NULL. Other rows that existed before stay as they are, so what a module's fixtures create stays for
that module's tests and goes after its last one.
A transaction rolled back at the end would not do: the code under test commits, and other processes read it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.db import connection

Snapshot = dict[str, int]
# One thread of its own does the work: a test may hold an event loop in the main thread (Playwright's sync API),
# where Django refuses database calls.
_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mls-db")


def _tables() -> list[str]:
    """Tables with an integer primary key named ``id`` (Django's default; the few others hold no test rows)."""
    with connection.cursor() as cursor:
        tables = []
        for table in connection.introspection.table_names(cursor):
            columns = {column.name: column for column in connection.introspection.get_table_description(cursor, table)}
            if "id" not in columns or connection.introspection.get_primary_key_column(cursor, table) != "id":
                continue
            kind = connection.introspection.get_field_type(columns["id"].type_code, columns["id"])
            if kind in ("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField"):
                tables.append(table)
    return tables


_TABLES: list[str] = []
# (table, column, referenced table, nullable) for every foreign key onto a table in _TABLES's ``id``.
_REFERENCES: list[tuple[str, str, str, bool]] = []


def _references() -> list[tuple[str, str, str, bool]]:
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            nullable = {c.name: c.null_ok for c in connection.introspection.get_table_description(cursor, table)}
            for column, (target_column, target) in connection.introspection.get_relations(cursor, table).items():
                if target_column == "id" and target in _TABLES:
                    found.append((table, column, target, bool(nullable.get(column))))
    return found


def snapshot() -> Snapshot:
    return _thread.submit(_snapshot).result()


def _snapshot() -> Snapshot:
    """The highest ``id`` of every table now (0 when empty)."""
    if not _TABLES:
        _TABLES.extend(_tables())
        _REFERENCES.extend(_references())
    quote = connection.ops.quote_name
    query = " UNION ALL ".join(f"SELECT '{table}', COALESCE(MAX(id), 0) FROM {quote(table)}" for table in _TABLES)
    with connection.cursor() as cursor:
        cursor.execute(query)
        return dict(cursor.fetchall())


def restore(before: Snapshot) -> int:
    return _thread.submit(_restore, before).result()


def _restore(before: Snapshot) -> int:
    """Delete the rows created since ``before``; return how many."""
    quote = connection.ops.quote_name
    changed = [table for table, highest in _snapshot().items() if highest > before.get(table, 0)]
    if not changed:
        return 0
    deleted = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")  # no FK triggers: any delete order holds
        else:
            cursor.execute("PRAGMA foreign_keys = OFF")
        try:
            gone = {table: before.get(table, 0) for table in changed}  # ids above these are deleted
            for table in changed:
                cursor.execute(f"DELETE FROM {quote(table)} WHERE id > %s", [gone[table]])
                deleted += cursor.rowcount
            # Older rows pointing at deleted ones: NULL, or deleted too where the column may not be NULL. One level
            # only: rows pointing at an older row deleted here are not followed.
            for table, column, target, nullable in _REFERENCES:
                if target not in gone:
                    continue
                if nullable:
                    cursor.execute(f"UPDATE {quote(table)} SET {quote(column)} = NULL WHERE {quote(column)} > %s",
                                   [gone[target]])
                else:
                    cursor.execute(f"DELETE FROM {quote(table)} WHERE {quote(column)} > %s", [gone[target]])
                    deleted += cursor.rowcount
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")
            else:
                cursor.execute("PRAGMA foreign_keys = ON")
    return deleted


def close() -> None:
    """Close the isolation thread's database connection (the session's end)."""
    _thread.submit(lambda: connection.close()).result()  # the thread's own connection
