"""limit-postgres worker (psycopg loop, used when pgbench is not installed): claim N, run,
complete N, as two autocommit statements.

Usage: python -m bench.limits.pg_worker URL BATCH   (probe settings from the env)
"""

from __future__ import annotations

import sys
import time

import psycopg

from bench import probe
from bench.limits.files import load


def main(url: str, batch: int) -> None:
    claim, complete = load("pg/claim.sql"), load("pg/complete.sql")
    with psycopg.connect(url, autocommit=True, prepare_threshold=0) as conn:
        while True:
            rows = conn.execute(claim, (batch,)).fetchall()
            if not rows:
                time.sleep(0.001)  # the queue is empty: poll again shortly
                continue
            for _id, payload, _tok in rows:
                probe.record(payload["n"], time.time())
            conn.execute(complete, ([r[0] for r in rows], rows[0][2]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
