"""limit-redis worker: one Lua claim of N and one Lua complete of N per cycle, pipelined so
the complete of batch k and the claim of batch k+1 share one round trip.

Usage: python -m bench.limits.redis_worker URL BATCH   (probe settings from the env)
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import redis

from bench import probe
from bench.limits import redis_common as rc


def main(url: str, batch: int) -> None:
    r = redis.Redis.from_url(url)
    claim, complete = rc.scripts(r)
    pending: tuple[str, list[bytes]] | None = None  # (token, ids) still to complete
    while True:
        token = uuid.uuid4().hex
        now = time.time()
        pipe = r.pipeline(transaction=False)
        if pending is not None:
            complete(keys=rc.complete_keys(), args=[pending[0], now, *pending[1]], client=pipe)
        claim(keys=rc.claim_keys(), args=[batch, token, now + 300], client=pipe)
        claimed = pipe.execute()[-1]
        pending = None
        if not claimed:
            time.sleep(0.001)  # the queue is empty: poll again shortly
            continue
        ids = claimed[0::2]
        for payload in claimed[1::2]:
            probe.record(json.loads(payload)["n"], time.time())
        pending = (token, ids)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
