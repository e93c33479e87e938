"""Command line: argv -> Config -> serve (or check-config)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import __version__, config, logs, settings
from .loops import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mysqlgate",
        description="Connection-pooling proxy for MySQL and MariaDB.",
        epilog="Every setting can also come from the environment as MYSQLGATE_<SECTION>_<KEY> "
        "(e.g. MYSQLGATE_POOL_SIZE) or from the config file's [section] key.",
    )
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "check-config", "status", "health"],
                        help="what to do (default: serve); status: what a running mysqlgate's "
                        "admin console says (pools, clients, servers, stats); health: its "
                        "/healthz answer, exit status 0 when healthy")
    parser.add_argument("--version", action="version", version=f"mysqlgate {__version__}")
    parser.add_argument("--config", "-c", help="TOML config file")
    parser.add_argument("--upstream", dest="upstream.url", action="append", metavar="URL",
                        help="mysql://user:password@host:port/database; repeat for several "
                        "accounts, each with a pool of its own")
    parser.add_argument("--listen", dest="listen.addresses", action="append", metavar="ADDR",
                        help="host:port or unix:/path; repeat for several (default "
                        "127.0.0.1:6033)")
    parser.add_argument("--admin", metavar="ADDR",
                        help="status: the admin console's host:port or unix:/path (default: "
                        "admin.listen)")
    parser.add_argument("--json", action="store_true", help="status: JSON, for scripts")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="health: where /healthz is served (default: metrics.listen)")
    for setting in settings.SETTINGS:
        if setting.name in ("upstream.url", "listen.addresses"):
            continue
        default = settings.show_default(setting)
        text = setting.help if default is None else f"{setting.help} (default: {default})"
        # argparse %-formats help texts ("90% of wait_timeout").
        parser.add_argument(settings.flag_name(setting.name), dest=setting.name, metavar="VALUE",
                            help=text.replace("%", "%%"))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        status = run_command(argv)
        # Flushed here rather than at exit, so that a reader gone away is caught below.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader stopped reading (`mysqlgate status --json | head`): no traceback, and,
        # as for any tool whose output was cut short, a non-zero status. stdout now points
        # at /dev/null so that the interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def run_command(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags: dict[str, Any] = {
        name: value for name, value in vars(args).items() if "." in name and value is not None
    }
    try:
        cfg = config.load(args.config, config.environment(), flags)
    except (settings.ConfigError, OSError) as exc:
        print(f"mysqlgate: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg["log.level"], cfg["log.format"])
    if args.command == "check-config":
        return run(check_config(cfg))
    if args.command == "status":
        from .status import main as status

        return status(cfg, args.admin, args.json)
    if args.command == "health":
        from .status import health

        return health(cfg, args.metrics)
    from .server import serve

    def reload() -> config.Config:
        return config.load(args.config, config.environment(), flags)

    return run(serve(cfg, reload))


async def check_config(cfg: config.Config) -> int:
    from .accounts import pool_settings, probe
    from .errors import MysqlgateError, ServerError

    for upstream in cfg.upstreams:
        try:
            facts = await probe(upstream)
        except (MysqlgateError, ServerError, OSError) as exc:
            print(f"mysqlgate: cannot use upstream {upstream.address}: {exc}",
                  file=sys.stderr)
            return 1
        settings = pool_settings(cfg, facts)
        print(f"upstream {upstream.user}@{upstream.address}: "
              f"{facts.info.version.decode(errors='replace')}")
        print(f"  wait_timeout {facts.wait_timeout:g}s, max_user_connections "
              f"{facts.max_user_connections}, max_connections {facts.max_connections}")
        print(f"  pool: size {settings.size}, idle_timeout {settings.idle_timeout:g}s, "
              f"queue_timeout {settings.queue_timeout:g}s")
    print("listen: " + ", ".join(str(listener) for listener in cfg.listeners))
    return 0


if __name__ == "__main__":
    sys.exit(main())
