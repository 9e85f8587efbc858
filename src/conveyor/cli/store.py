"""``conveyor migrate``: the store's schema."""

from __future__ import annotations

import click

from conveyor.cli.app import Ctx, err_console, pass_ctx

__all__ = ["migrate"]


@click.command()
@click.option("--sql", is_flag=True, help="Print the schema SQL for a DBA instead of applying it.")
@pass_ctx
def migrate(obj: Ctx, sql: bool) -> None:
    """Create or upgrade the store's schema (idempotent)."""
    if sql:
        click.echo(obj.queue().migration_sql())  # needs no connection
        return
    obj.run(lambda queue: queue.migrate(), create=True)
    err_console.print("migrated")
