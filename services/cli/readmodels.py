"""`tubeflow rebuild` and `tubeflow verify`: the read models thrown away and folded again, or compared with a fold."""

from __future__ import annotations

import sys

from services.runtime.settings import Settings
from services.runtime.tasks import run_briefly


def run_read_models(action: str) -> int:
    from services.progress.rebuild import rebuild, verify
    from services.runtime.nats import connect, ensure_topology

    settings = Settings()
    if not settings.nats_url:
        print("TUBEFLOW_NATS_URL is not set", file=sys.stderr)
        return 2

    async def run() -> int:
        nc = await connect(
            settings.nats_url,  # type: ignore[arg-type]
            f"tubeflow-{action}",
            auth=settings.nats_auth(),
            timeout=settings.nats_connect_timeout,
        )  # type: ignore[arg-type]
        try:
            js = nc.jetstream()
            await ensure_topology(js)
            if action == "rebuild":
                count = await rebuild(js)
                print(f"rebuilt the read models of {count} job(s) from the stream")
                return 0
            problems = await verify(js)
            for problem in problems:
                print(problem)
            if problems:
                print(f"{len(problems)} difference(s) between the read models and the fold", file=sys.stderr)
                return 1
            print("the read models equal a fresh fold of the stream")
            return 0
        finally:
            await nc.close()

    return run_briefly(run())
