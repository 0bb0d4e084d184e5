"""``appliance serve``: run the server in the foreground until SIGTERM/SIGINT, then drain."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from appliance.processes.plan import WorkerPlan
    from appliance.processes.supervisor import WorkerIdentity

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
    from appliance.processes.plan import plan_workers

    try:
        settings = settings_from_args(args)
        check_protected_mode(settings)
    except ConfigError as exc:
        print(f"appliance: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level)
    plan = plan_workers(settings)
    if plan.workers > 1:
        return supervise(settings, plan)
    return run_process(settings)


def run_process(settings: Settings, worker: WorkerIdentity | None = None) -> int:
    """Serve in this process (the whole server, or one worker of it) until SIGTERM; the exit code."""
    from appliance.audit import AuditError
    from appliance.audit.integrity import AuditCorruptError
    from appliance.system.eventloop import run as run_loop

    try:
        return run_loop(serve(settings, worker))
    except AuditCorruptError as exc:  # its own status: a supervisor may alert on it; a restart starts a new log
        print(f"appliance: cannot start: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, AuditError) as exc:
        print(f"appliance: cannot start: {exc}", file=sys.stderr)
        return 2


def supervise(settings: Settings, plan: WorkerPlan) -> int:
    """Several workers: this process becomes their supervisor (``appliance.processes.supervisor``)."""
    from appliance.processes.supervisor import Supervisor, hold_ports, make_run_dir

    # N workers share the cores, and the server-wide limits (ServerSettings.limit_share)
    settings = settings.replace("runtime", threads=plan.threads_per_worker).replace("server", workers=str(plan.workers))
    try:
        held = hold_ports(settings)
    except ConfigError as exc:
        print(f"appliance: cannot start: {exc}", file=sys.stderr)
        return 2
    settings.server.state_dir.mkdir(parents=True, exist_ok=True)
    run_dir = make_run_dir()
    _preload()
    writer, listener = None, None
    if settings.audit.enabled:
        from appliance.audit.process import bind_listener, serve_audit_writer

        writer, listener = serve_audit_writer, bind_listener(run_dir / "audit.sock")
    log.info("supervising", extra={"fields": {"workers": plan.workers, "why": plan.reason,
                                              "threads_per_worker": plan.threads_per_worker}})
    return Supervisor(settings, plan, run_process, writer, listener, run_dir, held).run()


def _preload() -> None:
    """Import what every worker needs before forking them: the pages are then shared, not copied
    per worker, and a restarted worker is ready sooner."""
    import appliance.app
    import appliance.grpc.server
    import appliance.protocol.control  # noqa: F401
    for runtime in ("onnxruntime", "openvino"):
        try:
            __import__(runtime)
        except ImportError:  # pragma: no cover - both are dependencies
            continue


async def serve(settings: Settings, worker: WorkerIdentity | None = None) -> int:
    from aiohttp import web

    from appliance.app import create_app
    from appliance.appkeys import PARTS
    from appliance.grpc.server import start_grpc
    from appliance.parts import build_parts
    from appliance.protocol.control import control_app
    from appliance.protocol.drain import drain
    from appliance.system.listeners import open_listeners
    from appliance.system.tls import server_ssl_context

    ssl_context = server_ssl_context(settings.tls)
    settings.server.state_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, build_parts(settings, worker))
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=settings.server.drain_grace_s,
                           keepalive_timeout=settings.http.keepalive_timeout_s,
                           read_bufsize=2**16)
    await runner.setup()
    if worker is not None and worker.others_ready():
        # A restarted worker joins the port only once it can answer: else the connections the kernel
        # hands it would meet a server without models while the other workers serve them fine.
        await app[PARTS].loaded()
    # Sockets of our own (not TCPSite's) so that a drain can filter and measure them; each worker
    # binds its own into the port's SO_REUSEPORT group, and the kernel spreads connections over them.
    listeners = open_listeners(settings.server.host, settings.server.port, backlog=1024,
                               reuse_port=worker is not None)
    for sock in listeners:
        await web.SockSite(runner, sock, ssl_context=ssl_context, backlog=1024).start()
    control: web.AppRunner | None = None
    if worker is not None:
        control = web.AppRunner(control_app(app), handle_signals=False, access_log=None)
        await control.setup()
        await web.UnixSite(control, str(worker.socket_path())).start()
    scheme = "https" if ssl_context else "http"
    log.info("listening", extra={"fields": {"url": f"{scheme}://{settings.server.host}:{settings.server.port}",
                                            "worker": worker.index if worker is not None else None}})
    try:
        grpc_server = await start_grpc(app[PARTS], settings, reuse_port=worker is not None)
    except ConfigError:
        await runner.cleanup()  # the parts are started: close the audit log properly
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A worker drains on SIGTERM from its supervisor only (^C reaches the whole process group).
    for sig in (signal.SIGTERM,) if worker is not None else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining", extra={"fields": {"grace_s": settings.server.drain_grace_s}})
    if worker is not None:
        worker.ready_path().unlink(missing_ok=True)
    draining = asyncio.create_task(drain(runner, listeners, settings.server.drain_grace_s))
    if grpc_server is not None:
        await asyncio.sleep(0)  # drain() marks the service draining before its first await
        await grpc_server.stop(settings.server.drain_grace_s)  # new calls refused, admitted ones answered
    finished = await draining
    if control is not None:
        await control.cleanup()
    log.info("stopped", extra={"fields": {"drained": finished}})
    return 0
