"""The ``dromos`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from scheduler.config import (
    ConfigError,
    ServeConfig,
    check_exposure,
    credentials_from,
    load_nodes,
)


def _serve(args: argparse.Namespace) -> int:
    try:
        credentials = credentials_from(args.auth_token, args.basic_auth)
        check_exposure(args.host, credentials)
        nodes = tuple(load_nodes(Path(args.nodes))) if args.nodes else None
        config = ServeConfig(
            host=args.host,
            port=args.port,
            state_dir=Path(args.state_dir),
            runtime=args.runtime,
            nodes=nodes,
            credentials=credentials,
        )
        from api.server import serve

        return serve(config)
    except ConfigError as e:
        print(f"dromos: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dromos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the scheduler, REST API and status page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--state-dir", default=".dromos", help="SQLite state, task sandboxes")
    serve.add_argument("--runtime", choices=["local", "docker"], default="local",
                       help="local processes, or containers on a Docker Engine")
    serve.add_argument("--nodes", help="JSON or YAML list of nodes (default: this machine)")
    serve.add_argument("--auth-token", help="require 'Authorization: token=<t>' (or Bearer)")
    serve.add_argument("--basic-auth", help="require HTTP Basic user:password")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
