"""Prometheus metrics and a health check over HTTP (metrics.listen): GET /metrics,
GET /healthz.

Nothing is counted here: a collector reads the counters the session layer and the pools
keep anyway, at scrape time, so the hot path pays nothing for metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .context import GateContext
from .pool_types import WAIT_BUCKETS

log = logging.getLogger("mysqlgate.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GateCollector(Collector):
    """mysqlgate_* metrics from a running gate's counters."""

    def __init__(self, ctx: GateContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        stats = ctx.stats
        yield _gauge("mysqlgate_client_connections", "Client connections open now",
                     len(ctx.sessions))
        yield _gauge("mysqlgate_clients_pinned",
                     "Clients tied to their upstream connection by session state now",
                     sum(1 for s in ctx.sessions.values() if s.pins))
        yield _counter("mysqlgate_client_connections_accepted", "Clients that logged in",
                       stats.clients_accepted)
        yield _counter("mysqlgate_client_connections_rejected",
                       "Clients refused for limits.max_clients", stats.clients_rejected)
        yield _counter("mysqlgate_auth_failures", "Refused client logins", stats.auth_failures)
        yield _counter("mysqlgate_commands", "Commands (statements) from clients",
                       stats.commands)
        yield _counter("mysqlgate_local_answers",
                       "Settings statements answered without the server", stats.local_answers)
        yield _counter("mysqlgate_retries",
                       "Commands run again after their upstream connection was lost",
                       stats.retries)
        yield _counter("mysqlgate_idle_transaction_timeouts",
                       "Idle transactions rolled back (pool.idle_transaction_timeout)",
                       stats.idle_transaction_timeouts)
        yield _counter("mysqlgate_upstream_lost",
                       "Upstream connections lost while they served a client",
                       stats.upstream_lost)
        errors = CounterMetricFamily("mysqlgate_errors_sent",
                                     "Errors mysqlgate itself sent clients, by code",
                                     labels=["code"])
        for code, count in sorted(stats.errors_sent.items()):
            errors.add_metric([str(code)], count)
        yield errors
        pins = CounterMetricFamily("mysqlgate_pins", "Clients pinned, by reason",
                                   labels=["reason"])
        for reason, count in sorted(stats.pins.items()):
            pins.add_metric([reason], count)
        yield pins
        yield from self._pools()
        yield from self._fleets()

    def _pools(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily("mysqlgate_upstream_connections",
                                        "Upstream connections now, by state",
                                        labels=["pool", "state"])
        size = GaugeMetricFamily("mysqlgate_pool_size", "pool.size", labels=["pool"])
        effective = GaugeMetricFamily(
            "mysqlgate_pool_effective_size",
            "The size the pool keeps to now (lower after the server said the account is "
            "full)", labels=["pool"])
        waiting = GaugeMetricFamily("mysqlgate_queue_length",
                                    "Clients waiting for an upstream connection",
                                    labels=["pool"])
        reachable = GaugeMetricFamily("mysqlgate_upstream_reachable",
                                      "1 unless the server could not be reached",
                                      labels=["pool"])
        unreachable_for = GaugeMetricFamily(
            "mysqlgate_upstream_unreachable_seconds",
            "How long the server has been unreachable, clients waiting meanwhile (0: it "
            "answers)", labels=["pool"])
        outages = CounterMetricFamily("mysqlgate_upstream_outages",
                                      "Times the server became unreachable", labels=["pool"])
        wait = HistogramMetricFamily("mysqlgate_queue_wait_seconds",
                                     "How long clients waited for an upstream connection",
                                     labels=["pool"])
        connects = CounterMetricFamily("mysqlgate_upstream_connects",
                                       "Upstream connections opened", labels=["pool"])
        failures = CounterMetricFamily("mysqlgate_upstream_connect_failures",
                                       "Upstream connects that failed", labels=["pool"])
        limited = CounterMetricFamily(
            "mysqlgate_upstream_connect_limit_rejections",
            "Connects the server refused for the account's limit (1226, 1040)",
            labels=["pool"])
        timeouts = CounterMetricFamily("mysqlgate_queue_timeouts",
                                       "Clients that waited pool.queue_timeout in vain",
                                       labels=["pool"])
        resets = CounterMetricFamily("mysqlgate_upstream_resets",
                                     "Upstream sessions reset before another client",
                                     labels=["pool"])
        closed = CounterMetricFamily("mysqlgate_upstream_closed",
                                     "Upstream connections closed, by cause",
                                     labels=["pool", "cause"])
        for account in self.ctx.accounts:
            pool = account.pool
            name = pool.name
            stats = pool.stats
            connections.add_metric([name, "idle"], pool.idle_count)
            connections.add_metric([name, "in_use"], pool.lent_count)
            connections.add_metric([name, "opening"], pool.opening_count)
            size.add_metric([name], pool.settings.size)
            effective.add_metric([name], pool.effective_size)
            waiting.add_metric([name], pool.waiting_count)
            reachable.add_metric([name], 0 if pool.unreachable else 1)
            unreachable_for.add_metric([name], pool.unreachable_for)
            outages.add_metric([name], stats.outages)
            cumulative = 0
            buckets = []
            for bound, count in zip((*WAIT_BUCKETS, float("inf")), stats.wait_buckets,
                                    strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            wait.add_metric([name], buckets, stats.wait_seconds)
            connects.add_metric([name], stats.connects)
            failures.add_metric([name], stats.connect_failures)
            limited.add_metric([name], stats.limit_rejections)
            timeouts.add_metric([name], stats.wait_timeouts)
            resets.add_metric([name], stats.resets)
            for cause, count in (("idle", stats.closed_idle), ("lifetime", stats.closed_lifetime),
                                 ("ping", stats.pings_failed), ("lost", stats.closed_broken),
                                 ("evicted", stats.key_evictions),
                                 ("paused", stats.closed_paused),
                                 ("excess", stats.closed_excess)):
                closed.add_metric([name, cause], count)
        yield from (connections, size, effective, waiting, reachable, unreachable_for,
                    outages, wait, connects, failures, limited, timeouts, resets, closed)


    def _fleets(self) -> Iterator[Metric]:
        """How each account's limit is shared with other mysqlgates (fleet.py); only
        for accounts that share it."""
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "account_connections": GaugeMetricFamily(
                "mysqlgate_fleet_account_connections",
                "The account's connections on the server, every host's, at the last count",
                labels=["pool"]),
            "account_limit": GaugeMetricFamily(
                "mysqlgate_fleet_account_limit", "The account's max_user_connections",
                labels=["pool"]),
            "reserve": GaugeMetricFamily(
                "mysqlgate_fleet_reserve", "Connections left free for others (pool.reserve)",
                labels=["pool"]),
            "share": GaugeMetricFamily(
                "mysqlgate_fleet_share", "This mysqlgate's connections (not those it offers)",
                labels=["pool"]),
            "sharing": GaugeMetricFamily(
                "mysqlgate_fleet_sharing",
                "1 while the account is shared with other programs, 0 alone, -1 when the "
                "server does not allow sharing", labels=["pool"]),
            "given_back": CounterMetricFamily(
                "mysqlgate_fleet_given_back",
                "Connections this mysqlgate gave back for other mysqlgates", labels=["pool"]),
            "taken": CounterMetricFamily(
                "mysqlgate_fleet_taken",
                "Connections other mysqlgates offered that this one took", labels=["pool"]),
            "queries": CounterMetricFamily(
                "mysqlgate_fleet_queries", "Statements of the sharing's own",
                labels=["pool"]),
            "over_limit": CounterMetricFamily(
                "mysqlgate_fleet_over_limit_seconds",
                "Time a first connection waited over the account's limit minus the reserve",
                labels=["pool"]),
        }
        for account in self.ctx.accounts:
            fleet = account.fleet
            if fleet is None:
                continue
            view = fleet.view()
            name = [account.pool.name]
            if view.account_connections is not None:
                families["account_connections"].add_metric(name, view.account_connections)
            families["account_limit"].add_metric(name, view.account_limit)
            families["reserve"].add_metric(name, view.reserve)
            families["share"].add_metric(name, view.share)
            families["sharing"].add_metric(
                name, -1 if view.status.startswith("off") else
                1 if view.status == "sharing" else 0)
            families["given_back"].add_metric(name, view.stats.given_back)
            families["taken"].add_metric(name, view.stats.taken)
            families["queries"].add_metric(name, view.queries)
            families["over_limit"].add_metric(name, view.stats.over_limit_seconds)
        yield from families.values()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class MetricsServer:
    """A small HTTP server: /metrics for Prometheus, /healthz for orchestrators (200 while
    mysqlgate accepts clients and every upstream answers; a busy pool is healthy)."""

    def __init__(self, ctx: GateContext, healthy: Callable[[], str | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GateCollector(ctx))
        self.healthy = healthy  # None when healthy, else why not
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them matters here
            parts = request.split()
            path = parts[1].split(b"?")[0] if len(parts) > 1 else b""
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path == b"/metrics":
                status, body, kind = "200 OK", generate_latest(self.registry), CONTENT_TYPE
            elif path == b"/healthz":
                problem = self.healthy()
                if problem is None:
                    status, body, kind = "200 OK", b"ok\n", "text/plain"
                else:
                    status = "503 Service Unavailable"
                    body, kind = problem.encode() + b"\n", "text/plain"
            else:
                status, body, kind = "404 Not Found", b"/metrics or /healthz\n", "text/plain"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head if parts and parts[0] == b"HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
