"""What a server's own figures say about its saturation now, for the adaptive limiter.

The monitor scrapes each gateway every ``probe_interval_seconds`` (core/signals.py) and
stores what it read with ``own_in_flight``, our own requests on the gateway at that
moment. A scrape is a photograph of the past: vLLM's gauges run 3-6 s behind in steady
state (``LAG_SECONDS``), and ours have moved since. So:

* other tenants' load is what the server counted beyond our own requests then
  (``running + waiting - own_in_flight``), and the queue now is estimated from our own
  in-flight count now on top of it (with slots: ``own_now + others - slots``; without:
  the scraped queue moved by how many more or fewer we have in flight now);
* the moment a scrape describes is its read time less the kind's gauge lag; the limiter
  acts on it only when that moment is after its limit last moved;
* a scrape older than ``STALE_PROBES`` probe intervals says nothing at all.

Per kind, the word the server gives (the reason recorded with the limit):

* llama.cpp: ``/slots`` count (less other tenants' busy slots) is a ceiling, and
  ``requests_deferred`` > 0 with nothing left to us means ``deferred>0``.
* vLLM: waiting requests on two scrapes in a row (``waiting 3``), KV-cache use at or
  above ``KV_FULL`` (``kv 93%``), or new preemptions since the last scrape
  (``preempted``).
* Ollama, LiteLLM and plain OpenAI servers report no queue: the limiter judges them by
  latency and throughput alone (``reads_queue`` false).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

LAG_SECONDS = {"vllm": 5.0}  # how far a kind's gauges trail the moment they are scraped
STALE_PROBES = 3
KV_FULL = 0.9


@dataclass(frozen=True, slots=True)
class ServerView:
    pressure: str | None = None  # the server's word that it is past its knee now
    pressure_at: float | None = None  # epoch seconds the word describes
    slots: int | None = None  # requests it can run at once for us
    reads_queue: bool = False  # it reports a queue at all


def server_view(
    signals: dict[str, Any] | None, kind: str, own_now: int, now: float, probe_interval: float
) -> ServerView:
    """Read one stored scrape (``gateway_state.signals``) as of ``now``."""
    if not signals or not isinstance(signals.get("read_at"), str):
        return ServerView()
    try:
        read_at = datetime.fromisoformat(signals["read_at"]).timestamp()
    except ValueError:
        return ServerView()
    if now - read_at > STALE_PROBES * probe_interval + 1:
        return ServerView()  # too old to describe now
    running, waiting = _number(signals.get("running")), _number(signals.get("waiting"))
    slots_total = signals.get("slots_total") if isinstance(signals.get("slots_total"), int) else None
    own_then = _number(signals.get("own_in_flight"))
    others = 0.0
    if own_then is not None and running is not None:
        others = max(0.0, running + (waiting or 0.0) - own_then)
    slots = None
    if slots_total:
        slots = max(1, slots_total - round(others))
    reads_queue = waiting is not None or slots is not None
    described = read_at - LAG_SECONDS.get(kind, 0.0)
    pressure = None
    if waiting is not None and waiting > 0:
        if slots_total:
            queued_now = own_now + others - slots_total
        else:
            queued_now = waiting + own_now - (own_then if own_then is not None else own_now)
        if queued_now > 0:
            if kind == "llamacpp":
                pressure = "deferred>0"
            elif (signals.get("waiting_streak") or 0) >= 2:
                pressure = f"waiting {waiting:g}"
    kv = _number(signals.get("kv_cache_usage"))
    if pressure is None and kind == "vllm" and kv is not None and kv >= KV_FULL:
        pressure = f"kv {kv:.0%}"
    if pressure is None and (_number(signals.get("preemptions")) or 0) > 0:
        pressure = "preempted"
    return ServerView(pressure, described if pressure else None, slots, reads_queue)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
