"""Prometheus metrics, one registry per process (tests build many apps in one interpreter)."""

from __future__ import annotations

from typing import TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

M = TypeVar("M", Counter, Gauge, Histogram)


class Metrics:
    """Every metric ackbot exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Counter | Gauge | Histogram] = {}
        r = self.registry
        self.events_received = Counter(
            "ackbot_events_received", "Events accepted, by kind and source", ["kind", "source"], registry=r
        )
        self.events_duplicate = Counter("ackbot_events_duplicate", "Events answered as duplicates", registry=r)
        self.rules_matched = Counter("ackbot_rules_matched", "Rule matches, by rule", ["rule"], registry=r)
        self.deliveries = Counter(
            "ackbot_deliveries", "Deliveries by channel and final or created status", ["channel", "status"], registry=r
        )
        self.delivery_attempts = Counter(
            "ackbot_delivery_attempts", "Delivery attempts by channel and result", ["channel", "result"], registry=r
        )
        self.delivery_latency = Histogram(
            "ackbot_delivery_latency_seconds",
            "From event accepted to delivered",
            ["channel"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.deliveries_dead = Gauge(
            "ackbot_deliveries_dead", "Dead deliveries now, by channel", ["channel"], registry=r
        )
        self.delivery_failing_seconds = Gauge(
            "ackbot_delivery_failing_seconds",
            "How long the longest-failing delivery still being retried has been failing, by channel (0: none is)",
            ["channel"],
            registry=r,
        )
        self.rate_limited = Counter(
            "ackbot_rate_limited", "Times a receiver or our pacing held a delivery back", ["channel"], registry=r
        )
        self.suppressed = Counter("ackbot_notifications_suppressed", "Held back by dedup or throttle", registry=r)
        self.noise_decisions = Counter(
            "ackbot_noise_decisions",
            "What noise control did with each rule action an event triggered: deliver, hold (quiet hours), wait "
            "(for:), suppress (dedup/throttle), silence, cancelled (resolved within for:), digest",
            ["outcome"],
            registry=r,
        )
        self.intake_group_events = Histogram(
            "ackbot_intake_group_events",
            "Events per intake transaction (the requests that arrived while the previous one committed)",
            buckets=GROUP_BUCKETS,
            registry=r,
        )
        self.http_latency = Histogram(
            "ackbot_http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def labelled(self, metric: M, *values: str) -> M:
        """metric.labels(*values), kept for the next time: prometheus_client checks the values and takes a lock on
        every labels() call, which costs more than the increment it is made for (the hot paths count per request)."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return cast(M, child)  # the key holds the metric it was made from

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
