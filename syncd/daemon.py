"""``syncd run``: the composition root of the long-running daemon.

Every resource is an async context on one AsyncExitStack, entered in the order
the service needs them and left in reverse: the scheduler stops triggering,
the runner drains, then the pools, the HTTP server and the watchdog go. A stop
is an Event set by SIGTERM or SIGINT; SIGHUP reloads the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import structlog
from aiohttp import web

from syncd import logs, pg, retry
from syncd.api import Services, create_app, unreachable_reason
from syncd.config import ApiConfig, Config, RetryConfig, TargetConfig
from syncd.configfile import load_config
from syncd.errors import ConfigError, SyncdError, Unavailable
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.pools import Backoff, Connections, PostgresPool
from syncd.redact import scrub
from syncd.runner import Runner
from syncd.scheduler import Schedules
from syncd.state import StateStore
from syncd.verify.service import Verifications
from syncd.watch import FreshnessWatch

log = structlog.get_logger("syncd.daemon")

STARTUP_RETRY = RetryConfig(initial_delay=timedelta(seconds=1), max_delay=timedelta(seconds=30))


def refuse_open_api(api: ApiConfig) -> None:
    """An API reachable from other hosts must not be open to all of them."""
    if api.token is not None:
        return
    try:
        loopback = ipaddress.ip_address(api.host).is_loopback
    except ValueError:
        loopback = api.host == "localhost"
    if not loopback:
        raise ConfigError(
            f"api.host is {api.host}, which other hosts can reach, and api.token is not set:"
            " set a token or bind to 127.0.0.1"
        )


async def serve(config: Config, *, reload_from: Path | None) -> int:
    """Run until SIGTERM or SIGINT; with ``reload_from``, SIGHUP re-reads that file."""
    refuse_open_api(config.api)
    stop = asyncio.Event()
    notifier = Notifier()
    metrics = Metrics()
    connections = Connections(config, Backoff())
    metrics.track_pools(connections.use)
    runner = Runner(config, metrics=metrics, notifier=notifier, connections=connections)
    verifications = Verifications(runner, metrics)
    schedules = Schedules(runner, verifications)
    store = StateStore(config.target.state_schema)
    watch = FreshnessWatch(runner, store, connections, metrics)
    services = Services(
        runner, schedules, store, metrics, connections=connections, watch=watch,
        verifications=verifications,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if reload_from is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, reload_from, runner, schedules)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(notifier.watchdog(runner.healthy))
            await stack.enter_async_context(_http(services, config.api))
            await stack.enter_async_context(connections)
            if not await _await_target(connections.target, store, stop):
                return 0
            services.pool = connections.target
            stack.push_async_callback(runner.drain, config.grace_period.total_seconds())
            stack.push_async_callback(verifications.close)
            schedules.apply(config)
            schedules.start()
            stack.callback(schedules.shutdown)
            await stack.enter_async_context(watch.watching())
            notifier.ready()
            log.info("daemon_ready", syncs=list(config.syncs))
            await stop.wait()
            log.info("shutdown_started", grace_s=config.grace_period.total_seconds())
            notifier.stopping()
    except SyncdError as exc:
        # 'systemctl status' shows this line beside the exit code.
        notifier.status(scrub(str(exc), config.secrets()))
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        notifier.close()
    log.info("shutdown_finished")
    return 0


@contextlib.asynccontextmanager
async def _http(services: Services, api: ApiConfig) -> AsyncIterator[None]:
    app_runner = web.AppRunner(create_app(services), handle_signals=False)
    await app_runner.setup()
    try:
        site = web.TCPSite(app_runner, api.host, api.port)
        try:
            await site.start()
        except OSError as exc:
            raise Unavailable(
                f"cannot listen on {_host_port(api.host, api.port)} (api.host, api.port):"
                f" {_os_reason(exc)}"
            ) from None
        for host, port, *_ in app_runner.addresses:
            log.info("http_listening", host=host, port=port, docs=f"http://{host}:{port}/docs")
        yield
    finally:
        await app_runner.cleanup()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_reason(exc: OSError) -> str:
    """The system's words for the failure: asyncio wraps them in a sentence of its own."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)  # a name lookup's error, whose numbers are negative


async def _await_target(pool: PostgresPool, store: StateStore, stop: asyncio.Event) -> bool:
    """Keep trying until the target answers and its state schema is up to date (readiness
    stays false meanwhile), or we are told to stop."""
    attempt = 0
    while not stop.is_set():
        try:
            async with pool.connection(patient=False) as conn:
                await store.migrate(conn)
            return True
        except Exception as exc:
            # A database not created yet may be soon; a refused login or a malformed DSN
            # will not mend, and end the daemon.
            if not isinstance(exc, asyncpg.InvalidCatalogNameError):
                pg.explain_refusal(exc, pool.database.dsn)
            if unreachable_reason(exc) is None:
                raise
            attempt += 1
            delay = retry.delay(STARTUP_RETRY, min(attempt, 6))
            log.warning("retrying", what="target", attempt=attempt, delay_s=round(delay, 2),
                        error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return False


def _reload(config_path: Path, runner: Runner, schedules: Schedules) -> None:
    try:
        config = load_config(config_path)
        refuse_open_api(config.api)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc), kept="the running configuration")
        return
    fixed_at_start = _fixed_at_start_changes(runner.config, config)
    if fixed_at_start:
        # Applied half-way, new runs would write to one target while the API, the state
        # store and /readyz watch another: all or nothing, and here it can only be nothing.
        log.error(
            "config_reload_refused",
            changed=fixed_at_start,
            reason="these keys take effect only when syncd starts; restart it to change them",
            kept="the running configuration",
        )
        return
    logs.configure(config.logging.level, config.logging.format, secrets=config.secrets())
    runner.reconfigure(config)
    changes = schedules.apply(config)
    log.info("config_reloaded", **changes)


def _fixed_at_start_changes(running: Config, new: Config) -> list[str]:
    """The changed keys that a running daemon cannot take: any about the target, which its
    pool and state store stand for from the start, and the address the API listens on.
    (api.token and api.max_batch_size are read anew by every request.)"""
    sections = {"target": list(TargetConfig.model_fields), "api": ["host", "port"]}
    return [
        f"{section}.{key}"
        for section, keys in sections.items()
        for key in keys
        if getattr(getattr(running, section), key) != getattr(getattr(new, section), key)
    ]
