"""The `nightear fleet` command line: run the post (with its console), export its record, or
make an operator's password hash for the config."""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from nightear.config import load_settings
from nightear.errors import ConfigError


def add_fleet_parser(sub: Any, since: Callable[[str], datetime]) -> None:
    fleet = sub.add_parser("fleet", help="the post: alerts, unit health, position fixes, the console")
    fleet.add_argument("--config", help="YAML config file (its mqtt and fleet sections)")
    fleet.add_argument("--db", help="the fleet's SQLite store (overrides fleet.store)")
    fleet.add_argument("--json", action="store_true",
                       help="JSON lines even on a terminal (they are the default into a pipe)")
    fleet.add_argument("--http", metavar="ADDR:PORT",
                       help="serve the operators' console here (overrides fleet.console.http)")
    fleet.add_argument("--export", choices=("csv", "json"), help="print the stored events and exit")
    fleet.add_argument("--fixes", action="store_true",
                       help="with --export: the position fixes (where the drones were) instead")
    fleet.add_argument("--since", type=since, help="with --export: ISO time (UTC) or an age (12h, 2d)")
    fleet.add_argument("--hash-password", action="store_true",
                       help="read an operator's password and print its hash for fleet.console.users")


def _hash_password() -> int:
    try:
        from argon2 import PasswordHasher
    except ImportError:
        raise ConfigError("--hash-password needs the fleet extra: pip install 'nightear[fleet]'") from None
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise ConfigError("password: at least 8 characters, please")
    print(PasswordHasher().hash(password))
    return 0


def _export(args: argparse.Namespace, path: str | None) -> int:
    from nightear.fleet.export import export_events, export_fixes
    from nightear.fleet.store import FleetStore

    if path is None or not Path(path).is_file():
        raise ConfigError(f"{path}: no such fleet store" if path else
                          "no fleet store to export: give --db FILE or a config with fleet.store")
    store = FleetStore(path, read_only=True)
    try:
        (export_fixes if args.fixes else export_events)(store, args.export, sys.stdout, args.since)
    finally:
        store.close()
    return 0


def fleet_command(args: argparse.Namespace) -> int:
    from nightear.fleet import service

    if args.hash_password:
        return _hash_password()
    settings = load_settings(args.config)
    base = Path(args.config).parent if args.config else None
    fleet_settings = settings.fleet
    if args.db is not None:
        fleet_settings = msgspec.structs.replace(fleet_settings, store=args.db)
    if args.export:
        return _export(args, fleet_settings.store)
    if args.fixes:
        raise ConfigError("--fixes goes with --export")
    console = fleet_settings.console
    if args.http is not None:
        try:
            console = msgspec.structs.replace(console, http=args.http)
            msgspec.convert(msgspec.to_builtins(console), type(console))
        except (msgspec.ValidationError, ValueError) as exc:
            raise ConfigError(f"--http {args.http}: {exc}") from None
    open_console = None
    if console.http is not None:
        try:
            from nightear.fleet.console.server import start_console
        except ImportError as exc:
            raise ConfigError(f"the console needs the fleet extra ({exc.name} is missing): "
                              "pip install 'nightear[fleet]'") from None
        open_console = start_console(console, base, lambda line: print(line, file=sys.stderr, flush=True))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service.run(settings.mqtt, fleet_settings, sys.stdout,
                    lambda line: print(line, file=sys.stderr, flush=True), stop, base,
                    json_lines=args.json or not sys.stdout.isatty(),
                    on_ready=open_console.attach if open_console is not None else None)
    finally:
        if open_console is not None:
            open_console.close()
    return 0
