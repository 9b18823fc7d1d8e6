"""`uv run python -m bench NAME [--quick] [--json PATH]`: run one benchmark (or `all`), print a table, write JSON."""

from __future__ import annotations

import argparse
import importlib
import logging

BENCHMARKS = {
    "throughput": "bench.throughput",
    "throttled": "bench.throttled",
    "latency": "bench.latency",
    "accept": "bench.accept",
    "list": "bench.listing",
    "search": "bench.search",
    "projector": "bench.projector",
    "fanout": "bench.fanout",
    "playlist": "bench.playlist",
    "idle": "bench.idle",
    "slots": "bench.slots",
    "breakdown": "bench.breakdown",
    "memory": "bench.memory",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--json", default=None, help="write the results here (with `all`: NAME is appended)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        report = importlib.import_module(BENCHMARKS[name]).run(args.quick)
        report.print()
        path = args.json
        if path and args.name == "all":
            path = f"{path.removesuffix('.json')}-{name}.json"
        report.save(path)


if __name__ == "__main__":
    main()
