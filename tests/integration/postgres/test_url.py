"""URL handling: conveyor's pool options are taken out, libpq gets sane defaults."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from conveyor.backends.postgres.connections import PoolOptions, parse_url
from conveyor.backends.postgres.sqlfiles import quote_schema
from conveyor.errors import ValidationError


def test_pool_options_are_removed_and_defaults_added() -> None:
    conninfo, opts = parse_url(
        "postgres://u:p@db:6543/app?pool_max_size=20&pool_timeout=2.5&connect_timeout=9"
    )
    assert opts == PoolOptions(min_size=1, max_size=20, timeout=2.5)
    params = conninfo_to_dict(conninfo)
    assert (params["host"], params["port"], params["dbname"]) == ("db", "6543", "app")
    assert params["connect_timeout"] == "9"  # the URL wins over our defaults
    assert params["keepalives"] == "1" and params["application_name"] == "conveyor"
    assert "pool_max_size" not in params


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://db/app?pool_max_size=x",
        "postgresql://db/app?pool_min_size=5&pool_max_size=2",
        "postgresql://db/app?pool_timeout=0",
        "mysql://db/app",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        parse_url(url)


def test_schema_is_quoted_only_when_valid() -> None:
    assert quote_schema("My_Schema1") == '"My_Schema1"'
    with pytest.raises(ValidationError):
        quote_schema('x"; DROP TABLE jobs; --')
