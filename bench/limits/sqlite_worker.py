"""limit-sqlite worker: claim N (BEGIN IMMEDIATE … UPDATE … RETURNING), run, complete N.

Usage: python -m bench.limits.sqlite_worker PATH BATCH   (probe settings from the env)
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from bench import probe
from bench.limits.files import load
from bench.limits.sqlite_common import connect


def main(path: str, batch: int) -> None:
    conn = connect(path)
    claim, complete = load("sqlite/claim.sql"), load("sqlite/complete.sql")
    while True:
        token = uuid.uuid4().hex
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(claim, (token, now + 300, now, batch)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            time.sleep(0.001)  # the queue is empty: poll again shortly
            continue
        for _id, payload in rows:
            t0 = time.time()
            probe.record(json.loads(payload)["n"], t0)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(complete, (time.time(), json.dumps([r[0] for r in rows]), token))
        conn.execute("COMMIT")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
