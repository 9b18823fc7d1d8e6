"""The `tubeflow` command: `up` (everything, with an embedded NATS), `service NAME` (one service), `get`, `subscribe`, `replay`,
`setup`, `rebuild`, `verify`, `asyncapi`. Each command's work is in a module of its own beside this one."""

from __future__ import annotations

import argparse
import os
import sys

from services.cli.engine import add_engine_parser
from services.cli.feed import add_feed_parser
from services.cli.get_options import add_job_arguments
from services.cli.queue import add_queue_parser
from services.cli.setup import SERVICE_MODULES
from services.cli.subscribe import add_subscribe_arguments


def _setup_logging() -> None:
    from services.runtime.logs import setup_logging

    setup_logging(os.environ.get("TUBEFLOW_LOG_FORMAT", "text").lower())


def cmd_up(args: argparse.Namespace) -> int:
    from services.cli.up import cmd_up

    return cmd_up(args)


def cmd_service(args: argparse.Namespace) -> int:
    from services.cli.up import cmd_service

    return cmd_service(args)


def cmd_replay(args: argparse.Namespace) -> int:
    from services.cli.replay import cmd_replay

    return cmd_replay(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from services.cli.doctor import cmd_doctor

    return cmd_doctor(args)


def cmd_setup(args: argparse.Namespace) -> int:
    from services.cli.setup import cmd_setup

    return cmd_setup(args)


def cmd_get(args: argparse.Namespace) -> int:
    from services.cli.get import run_get

    return run_get(args)


def cmd_subscribe(args: argparse.Namespace) -> int:
    from services.cli.subscribe import run_subscribe

    return run_subscribe(args)


def cmd_read_models(action: str) -> int:
    from services.cli.readmodels import run_read_models

    return run_read_models(action)


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from services.cli.asyncapi import write

    return write()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubeflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything, with an embedded NATS unless TUBEFLOW_NATS_URL is set")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", default=None, help="media and NATS store (default ./tubeflow-data)")
    up.add_argument(
        "--cluster",
        type=int,
        choices=(3, 5),
        default=None,
        help="embed a JetStream cluster of N nats-server nodes (N replicas) instead of one server, to watch node loss",
    )
    up.set_defaults(func=cmd_up)

    service = sub.add_parser("service", help="run one service against TUBEFLOW_NATS_URL")
    service.add_argument("name", choices=tuple(SERVICE_MODULES))
    service.add_argument("--host", default="127.0.0.1", help="api only")
    service.add_argument("--port", type=int, default=8000, help="api only")
    service.set_defaults(func=cmd_service)

    replay = sub.add_parser("replay", help="print a job's event timeline, or its folded view with --json")
    replay.add_argument("job_id")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--api", help="base URL of a tubeflow API, e.g. http://127.0.0.1:8000")
    source.add_argument("--nats", help="NATS URL, e.g. nats://127.0.0.1:4222")
    replay.add_argument("--until-seq", type=int, default=None, help="fold only events up to this stream sequence")
    replay.add_argument("--json", action="store_true", help="print only the folded JobView as JSON")
    replay.add_argument(
        "--token", default=None, help="with --api: bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)"
    )
    replay.set_defaults(func=cmd_replay)
    get = sub.add_parser("get", help="submit a URL to a running tubeflow and follow it with progress bars")
    get.add_argument("url")
    add_job_arguments(get)
    get.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    get.add_argument("--token", default=None, help="bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)")
    get.add_argument("--json", action="store_true", help="print newline-delimited JobView snapshots")
    get.set_defaults(func=cmd_get)

    subscribe = sub.add_parser("subscribe", help="follow a channel, playlist or feed: each new entry becomes a job")
    subscribe.add_argument("url")
    add_subscribe_arguments(subscribe)
    add_job_arguments(subscribe)
    subscribe.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    subscribe.add_argument(
        "--token", default=None, help="bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)"
    )
    subscribe.add_argument("--json", action="store_true", help="print the subscription as JSON")
    subscribe.set_defaults(func=cmd_subscribe)

    add_engine_parser(sub)
    add_feed_parser(sub)
    add_queue_parser(sub)

    doctor = sub.add_parser(
        "doctor", help="what this installation can do on real sites and what is missing (exit 1 on any problem)"
    )
    doctor.add_argument("--json", action="store_true", help="print the facts and problems as JSON")
    doctor.set_defaults(func=cmd_doctor)

    setup = sub.add_parser("setup", help="create or update streams, buckets and consumers; report what changed")
    setup.set_defaults(func=cmd_setup)

    rebuild = sub.add_parser("rebuild", help="throw the read models away and fold the whole stream again")
    rebuild.set_defaults(func=lambda args: cmd_read_models("rebuild"))
    verify = sub.add_parser("verify", help="compare the read models with a fresh fold; exit 1 on any difference")
    verify.set_defaults(func=lambda args: cmd_read_models("verify"))
    asyncapi = sub.add_parser("asyncapi", help="rewrite contracts/asyncapi.json from the event models")
    asyncapi.set_defaults(func=cmd_asyncapi)
    return parser


JETSTREAM_NOT_ENABLED_FOR_ACCOUNT = 10039


def main(argv: list[str] | None = None) -> None:
    import nats.js.errors
    from pydantic import ValidationError

    from services.runtime.nats.connection import NatsUnavailable

    _setup_logging()
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except ValidationError as exc:  # a TUBEFLOW_ setting that can't be used: say which, no traceback
        for error in exc.errors():
            print(f"error: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        sys.exit(2)
    except NatsUnavailable as exc:  # no server answered in time: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except nats.js.errors.APIError as exc:  # JetStream said no (e.g. the account has no JetStream): one line
        print(f"error: NATS JetStream refused: {exc.description or exc}", file=sys.stderr)
        if exc.err_code == JETSTREAM_NOT_ENABLED_FOR_ACCOUNT:
            print(
                "  (is TUBEFLOW_NATS_USER the application account's user, not the system account's?)", file=sys.stderr
            )
        sys.exit(1)


if __name__ == "__main__":
    main()
