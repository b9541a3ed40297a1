"""``lanewarden serve``: the composition root.

One asyncio process wires the board, the dispatcher, the gateway monitor, cross-process
wake-ups, the leader-only jobs (scheduler, alerts, outbox delivery), the HTTP endpoint
and the chat adapters. With no chat tokens (and without ``--headless``) the console
runs on the terminal. SIGTERM or SIGINT drains: no new claims, running work finishes
within the drain timeout, the rest goes back to ready for another process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lanewarden.bot.chat import AdapterContext, build_adapters
from lanewarden.bot.http.metrics import Metrics
from lanewarden.bot.http.server import HttpEndpoint, check_listen
from lanewarden.bot.tools.chart import status_chart_png
from lanewarden.bot.web import WebBoard, load_secret
from lanewarden.core.board import Board, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.dispatcher import Dispatcher
from lanewarden.core.executor import Executor
from lanewarden.core.gateways import GatewayMonitor
from lanewarden.core.leader import LeaderLease
from lanewarden.core.node_monitor import NodeMonitor
from lanewarden.core.outbox import OutboxDeliverer, OutboxSink
from lanewarden.core.redaction import hide_process_environment
from lanewarden.core.wakeup import PostgresListener, SqliteChangeWatcher
from lanewarden.core.windows import Window, WindowStore, check_jobs, host_timezone
from lanewarden.scheduler.alerts import AlertEngine
from lanewarden.scheduler.windows import WindowScheduler

log = logging.getLogger("lanewarden.serve")
# started before the dispatcher, stopped after the drain (the demo's simulated gateway);
# starting returns the coroutine function that stops it
Companion = Callable[[], Awaitable[Callable[[], Awaitable[None]]]]


class WakeBus:
    """Fans a wake-up topic out to every part of the process that cares."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[str], None]] = []

    def subscribe(self, fn: Callable[[str], None]) -> None:
        self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[str], None]) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)

    def publish(self, topic: str) -> None:
        for fn in list(self._subscribers):
            fn(topic)


CLEANUP_SECONDS = 10.0  # a front end that hangs while closing must not keep the process alive


async def _bounded(awaitable: Any, what: str) -> None:
    """Await one step of the shutdown, but never longer than ``CLEANUP_SECONDS``."""
    try:
        await asyncio.wait_for(awaitable, CLEANUP_SECONDS)
    except TimeoutError:
        log.warning("stopping: %s did not finish within %.0fs; going on", what, CLEANUP_SECONDS)


def gateway_down_hint(name: str, base_url: str) -> str:
    return (
        f"nothing runs on gateway {name} until {base_url} answers. Is the server running? "
        f"To point Lanewarden at yours: `lanewarden init`, then edit [gateways.{name}] base_url in "
        "~/.lanewarden/config.toml. To try it without a GPU: `lanewarden serve --demo` "
        "(`make run ARGS=--demo`)."
    )


class Service:
    def __init__(
        self,
        config: LanewardenConfig,
        *,
        headless: bool = False,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.config = config
        self.companions = list(companions)
        self.headless = headless
        self.stopping = asyncio.Event()
        self.bus = WakeBus()
        self.board: Board | None = None
        self.dispatcher: Dispatcher | None = None
        self.http: HttpEndpoint | None = None
        self.lease: LeaderLease | None = None
        self.duties: LeaderDuties | None = None
        # /metrics; the scheduler reports through job_run/job_misfire/job_error
        self.metrics: Metrics | None = None
        self._background: list[asyncio.Task[Any]] = []
        # front ends besides the console (chat adapters, ...): leaving the console keeps them
        self.front_ends: list[str] = []
        self._cleanups: list[Callable[[], Any]] = []
        self._explained: set[str] = set()  # gateways whose first outage was explained

    def _gateway_changed(self, name: str, healthy: bool) -> None:
        self.bus.publish("dispatch")
        if not healthy and name not in self._explained:
            self._explained.add(name)  # once per gateway: the next step, not a log flood
            log.warning("%s", gateway_down_hint(name, self.config.gateways[name].base_url))

    def request_stop(self) -> None:
        self.stopping.set()

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._report_crash)
        self._background.append(task)
        return task

    def _report_crash(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s stopped with an error", task.get_name(), exc_info=exc)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        for start in self.companions:
            self._cleanups.append(await start())
        board = await asyncio.to_thread(open_board, self.config)
        self.board = board
        disagreements = await asyncio.to_thread(board.seed_caps)
        if disagreements:
            log.warning(
                "this config's caps differ from the board's, which every process enforces: %s; "
                "to apply this config's, run `lanewarden caps reset <scope> [name]` with it",
                disagreements,
            )
        await asyncio.to_thread(WindowStore(board).sync_config, list(self.config.scheduler.jobs))
        metrics = Metrics(board, is_leader=lambda: self.lease is not None and self.lease.is_leader)
        self.metrics = metrics
        dispatcher = Dispatcher(board, observer=metrics.observer)
        metrics.attach_dispatcher(dispatcher)
        self.dispatcher = dispatcher
        self.bus.subscribe(dispatcher.wake)
        await dispatcher.start()
        log.info("board %s; dispatcher %s", board.db.describe(), dispatcher.id)

        if board.db.is_postgres:
            self.spawn(PostgresListener(self.config.board.url, self.bus.publish).run(), "pg-listener")
        else:
            watcher = SqliteChangeWatcher(self.config.board.url, self.bus.publish)
            watcher.start()
            self._cleanups.append(watcher.stop)
        monitor = GatewayMonitor(
            board.db,
            dict(self.config.gateways),
            on_change=self._gateway_changed,
        )
        self.spawn(monitor.run(), "gateway-monitor")

        adapters = build_adapters(self.config)
        if self.config.http.listen:
            self.http = HttpEndpoint(
                self.config.http.listen,
                board.db,
                dispatcher_id=dispatcher.id,
                metrics=metrics.scrape,
                is_leader=lambda: self.lease is not None and self.lease.is_leader,
                gateways=sorted(self.config.gateways),
            )
        if self.http is not None and self.config.web.enabled:
            web_board = WebBoard(board, secret=load_secret())
            web_board.install(self.http.app)
            self.bus.subscribe(web_board.hub.wake)  # other processes' changes
            self.front_ends.append("the web board")
        context = AdapterContext(self.config, board, self.http)
        for adapter in adapters:
            await adapter.start(context)
            self._cleanups.append(adapter.stop)
            self.front_ends.append(adapter.name)
        if self.http is not None:
            await self.http.start()
            self._cleanups.append(self.http.stop)

        self.lease = LeaderLease(board.db, dispatcher.id, self.config.scheduler.leader_lease_seconds)
        self.duties = LeaderDuties(self, {a.name: a.sink for a in adapters})
        lease_task = self.spawn(self.lease.run(self.duties.start, self.duties.stop), "leader-lease")

        if not self.headless and not adapters:
            if sys.stdin is not None and sys.stdin.isatty():
                self.spawn(self._console(board), "console")
            else:  # under systemd or nohup: an empty stdin must not end the service
                log.info("no terminal on stdin: running without the console")

        await self.stopping.wait()
        # leader duties first (the lease loop stops them on its way out): no window may
        # release work into a process that is leaving
        lease_task.cancel()
        await asyncio.gather(lease_task, return_exceptions=True)
        await asyncio.to_thread(self.lease.release)  # a peer takes over now, not after the TTL
        log.info("stopping: draining the dispatcher")
        await dispatcher.drain()
        for task in self._background:
            task.cancel()
        await _bounded(asyncio.gather(*self._background, return_exceptions=True), "background tasks")
        for cleanup in self._cleanups:
            result = cleanup()
            if asyncio.iscoroutine(result):
                await _bounded(result, getattr(cleanup, "__qualname__", "a clean-up"))
        await asyncio.to_thread(board.db.dispose)
        log.info("stopped")
        return 0

    async def _console(self, board: Board) -> None:
        from lanewarden.bot.cli import local_actor
        from lanewarden.bot.console import Console

        console = Console(Executor(board), local_actor("console"))
        loop = asyncio.get_running_loop()

        def read_eval_print() -> None:
            try:
                ending = console.run()
            except Exception:  # the terminal itself failed; the service is still useful
                log.exception("console stopped; the service keeps running (SIGTERM stops it)")
                return
            if ending == "eof" and self.front_ends:
                # the terminal went away (Ctrl-D, a closed SSH session): chat and the web
                # board go on; `quit` is the way to say "stop"
                others = ", ".join(self.front_ends)
                console.say(f"console closed; still serving {others}. Ctrl-C or SIGTERM stops the service.")
                log.info("console closed (%s); still serving %s", ending, others)
                return
            # quit, or the end of input on the only front end, stops the service
            loop.call_soon_threadsafe(self.request_stop)

        # a daemon thread, not the executor: a thread blocked reading the terminal must not
        # keep the process alive after SIGTERM
        threading.Thread(target=read_eval_print, name="console", daemon=True).start()


class LeaderDuties:
    """What only the leader-lease holder runs: outbox delivery, scheduler windows, alert rules,
    node exporter scrapes."""

    def __init__(self, service: Service, sinks: dict[str, OutboxSink]) -> None:
        self.service = service
        self.sinks = sinks
        self.windows: WindowScheduler | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._listeners: list[Callable[[str], None]] = []

    async def start(self) -> None:
        service = self.service
        board, lease = service.board, service.lease
        assert board is not None and service.dispatcher is not None and lease is not None
        config = service.config
        dispatcher = service.dispatcher
        if self.sinks:
            deliverer = OutboxDeliverer(board, self.sinks, service.dispatcher.id)
            self._listen(deliverer.wake)
            self._tasks.append(service.spawn(deliverer.run(), "outbox"))
        if config.scheduler.enabled:
            self.windows = WindowScheduler(
                board,
                misfire_grace_seconds=config.scheduler.misfire_grace_seconds,
                is_leader=lambda: lease.is_leader,
                builtin=builtin_windows(config),
                holder=service.dispatcher.id,
                on_run=service.metrics.job_ran if service.metrics is not None else None,
                # the daily digest goes out with the status chart
                executor=Executor(board, chart=status_chart_png),
                clock_skew=lambda: dispatcher.clock_skew,
            )
            await self.windows.start()
            windows = self.windows

            def on_windows_change(topic: str) -> None:
                if topic == "windows":
                    windows.request_reconcile()

            self._listen(on_windows_change)
        engine = AlertEngine(board, config, is_leader=lambda: lease.is_leader)
        self._tasks.append(service.spawn(engine.run(), "alerts"))
        # node exporters: one scraper per board, so the leader's
        self._tasks.append(service.spawn(NodeMonitor(board.db, config).run(), "node-monitor"))

    def _listen(self, fn: Callable[[str], None]) -> None:
        self.service.bus.subscribe(fn)
        self._listeners.append(fn)

    async def stop(self) -> None:
        for fn in self._listeners:
            self.service.bus.unsubscribe(fn)
        self._listeners.clear()
        if self.windows is not None:
            await self.windows.stop()
            self.windows = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def builtin_windows(config: LanewardenConfig) -> list[Window]:
    if not config.alerts.digest_cron:
        return []
    return [
        Window(
            name="lanewarden-digest",
            cron=config.alerts.digest_cron,
            timezone=host_timezone(),
            command="digest --post",
            source="builtin",
            created_by="lanewarden",
            created_at=utcnow(),
        )
    ]


def configure_logging() -> None:
    level = os.environ.get("LANEWARDEN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # keep third-party chatter (and anything that could echo a token) out of INFO logs
    for noisy in ("httpx", "httpcore", "apscheduler", "slack_bolt", "discord", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def serve(config: LanewardenConfig, *, headless: bool = False, demo: bool = False) -> int:
    configure_logging()
    hide_process_environment()  # agents run as our uid: keep /proc/<pid>/environ from them
    check_jobs(config)  # a job that cannot run is refused now, not when it fires at night
    companions: list[Companion] = []
    if demo:
        from lanewarden.bot.tools.demo import demo_companion, isolate_demo_process, prepare_demo

        config = prepare_demo()
        isolate_demo_process(config)
        companions.append(demo_companion(config, headless=headless))
    if config.http.listen:
        check_listen(config.http.listen)
    service = Service(config, headless=headless, companions=companions)
    return asyncio.run(service.run())
