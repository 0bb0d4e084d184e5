"""``appliance serve``: run the server in the foreground until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from appliance.config import ConfigError, Settings, load_settings

log = logging.getLogger("appliance")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="serve the model repository over HTTP and gRPC")
    parser.add_argument("--config", type=Path, help="appliance.toml (default: built-in defaults)")
    parser.add_argument("--host", help="address to bind (server.host)")
    parser.add_argument("--port", type=int, help="port (server.port)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (grpc.port; 0 = no gRPC)")
    parser.add_argument("--models", type=Path, help="model repository (server.models)")
    parser.add_argument("--state-dir", type=Path, help="writable state folder (server.state_dir)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow serving without authentication on a non-loopback address")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    changes = {k: v for k, v in {
        "host": args.host, "port": args.port, "models": args.models, "state_dir": args.state_dir,
    }.items() if v is not None}
    if args.insecure:
        changes["insecure"] = True
    if args.grpc_port is not None:
        settings = settings.replace("grpc", port=args.grpc_port)
    return settings.replace("server", **changes) if changes else settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_protected_mode(settings: Settings) -> None:
    """Like Redis' protected mode: no open server on a network address unless told so.

    Authentication counts as on when ``auth.enabled`` is set or any credential is configured
    (an API key in the store, a JWKS file, a client CA): see ``appliance.auth.guard``.
    """
    if settings.server.insecure or is_loopback(settings.server.host):
        return
    from appliance.auth.guard import auth_required

    if auth_required(settings):
        return
    raise ConfigError(
        f"refusing to serve {settings.server.host} without authentication: enable [auth] "
        "(appliance keys create ...) or pass --insecure"
    )


def run(args: argparse.Namespace) -> int:
    from appliance.logs import configure_logging

    try:
        settings = settings_from_args(args)
        check_protected_mode(settings)
    except ConfigError as exc:
        print(f"appliance: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level)
    runner: Callable[[Coroutine[Any, Any, int]], int]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    from appliance.audit import AuditError
    from appliance.audit.integrity import AuditCorruptError

    try:
        return runner(serve(settings))
    except AuditCorruptError as exc:  # its own status: a supervisor may alert on it; a restart starts a new log
        print(f"appliance: cannot start: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, AuditError) as exc:
        print(f"appliance: cannot start: {exc}", file=sys.stderr)
        return 2


async def serve(settings: Settings) -> int:
    from aiohttp import web

    from appliance.app import create_app
    from appliance.appkeys import PARTS
    from appliance.grpc.server import start_grpc
    from appliance.protocol.drain import drain
    from appliance.system.listeners import open_listeners
    from appliance.system.tls import server_ssl_context

    ssl_context = server_ssl_context(settings.tls)
    settings.server.state_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=settings.server.drain_grace_s,
                           keepalive_timeout=settings.http.keepalive_timeout_s,
                           read_bufsize=2**16)
    await runner.setup()
    # Sockets of our own (not TCPSite's) so that a drain can filter and measure them.
    listeners = open_listeners(settings.server.host, settings.server.port, backlog=1024)
    for sock in listeners:
        await web.SockSite(runner, sock, ssl_context=ssl_context, backlog=1024).start()
    scheme = "https" if ssl_context else "http"
    log.info("listening", extra={"fields": {"url": f"{scheme}://{settings.server.host}:{settings.server.port}"}})
    try:
        grpc_server = await start_grpc(app[PARTS], settings)
    except ConfigError:
        await runner.cleanup()  # the parts are started: close the audit log properly
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining", extra={"fields": {"grace_s": settings.server.drain_grace_s}})
    draining = asyncio.create_task(drain(runner, listeners, settings.server.drain_grace_s))
    if grpc_server is not None:
        await asyncio.sleep(0)  # drain() marks the service draining before its first await
        await grpc_server.stop(settings.server.drain_grace_s)  # new calls refused, admitted ones answered
    finished = await draining
    log.info("stopped", extra={"fields": {"drained": finished}})
    return 0
