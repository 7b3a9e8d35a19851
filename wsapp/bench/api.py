"""
The HTTP API's numbers: publishes per second into a channel with many subscribers, and
the latency from a POST to its last subscriber.

A ``twistd wsapp`` process (memory backend, one API key) serves ``subscribers`` WebSocket
clients of one channel, all in this process on asyncio. Publishers are blocking
:class:`wsapp.api.Client` threads on keep-alive connections. The rate counts publications
acknowledged (``200``) and fully delivered (every subscriber got every one); the latency
is taken one publication at a time, from just before its POST to its arrival at the last
subscriber (this process's clients read all 1,000 copies, so it includes their time).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api import Client
from .servers import BIN, free_port, stop_process

__all__ = ["run_api_bench"]

#: Publisher threads of the rate measurement.
PUBLISHERS = 4


def _start(folder: Path, key: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "config.yaml").write_text(
        "limits: {max_connections_per_address: 1000000, rate: 0}\n"
        f"api: {{keys: [{key}], rate: 0}}\n"
    )
    process = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "wsapp", "--port",
         f"tcp:{port}:interface=127.0.0.1"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    client = Client(f"http://127.0.0.1:{port}/api/", key, timeout=1)
    while True:
        try:
            client.info()
            client.close()
            return process, port
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                stop_process(process)
                raise RuntimeError("twistd wsapp did not start") from None
            time.sleep(0.1)


class _Subscribers:
    """``count`` websockets clients of one channel, counting what each received."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self.received = [0] * count
        #: For the latency runs: when the last subscriber got publication ``n``.
        self.last_arrival: dict[int, float] = {}
        self._copies: dict[int, int] = {}

    async def run(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        import websockets

        sockets = []
        for _ in range(self.count):
            ws = await websockets.connect(self.url, compression=None, max_queue=None)
            await ws.send(json.dumps({"action": "subscribe", "channel": "bench", "id": 1}))
            await ws.recv()
            sockets.append(ws)
        ready.set()
        tasks = [asyncio.ensure_future(self._read(i, ws)) for i, ws in enumerate(sockets)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for ws in sockets:
            await ws.close()

    async def _read(self, index: int, ws: Any) -> None:
        async for message in ws:
            event = json.loads(message)
            self.received[index] += 1
            sequence = event["data"].get("n") if isinstance(event["data"], dict) else None
            if sequence is not None:
                copies = self._copies[sequence] = self._copies.get(sequence, 0) + 1
                if copies == self.count:
                    self.last_arrival[sequence] = time.perf_counter()


def _measure(
    api: str, key: str, subscribers: _Subscribers, duration: float, samples: int
) -> dict[str, Any]:
    stop_at = time.perf_counter() + duration
    published = [0] * PUBLISHERS

    def publish(index: int) -> None:
        with Client(api, key) as client:
            while time.perf_counter() < stop_at:
                client.publish("bench", {"x": index})
                published[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=publish, args=(i,)) for i in range(PUBLISHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    posted = time.perf_counter() - started
    total = sum(published)
    deadline = time.monotonic() + 120
    while min(subscribers.received) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    delivered = time.perf_counter() - started
    complete = min(subscribers.received) >= total
    latencies = []
    with Client(api, key) as client:
        for n in range(samples):
            sent = time.perf_counter()
            client.publish("bench", {"n": n})
            deadline = time.monotonic() + 10
            while n not in subscribers.last_arrival and time.monotonic() < deadline:
                time.sleep(0.0005)
            if n in subscribers.last_arrival:
                latencies.append((subscribers.last_arrival[n] - sent) * 1000)
    latencies.sort()
    return {
        "subscribers": subscribers.count,
        "publishers": PUBLISHERS,
        "publications": total,
        "posts_per_second": round(total / posted, 1),
        "delivered_per_second": round(total / delivered, 1) if complete else None,
        "all_delivered": complete,
        "latency_ms": {
            "samples": len(latencies),
            "median": round(statistics.median(latencies), 2) if latencies else None,
            "p99": round(latencies[int(len(latencies) * 0.99) - 1], 2) if latencies else None,
        },
    }


def run_api_bench(smoke: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Run the API benchmark; return its numbers (or ``{"error": ...}``)."""
    count, duration, samples = (20, 0.5, 10) if smoke else (1000, 5.0, 200)
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as folder:
        process, port = _start(Path(folder), key)
        try:
            log(f"api: {count} subscribers, {PUBLISHERS} HTTP publishers for {duration} s")
            subscribers = _Subscribers(f"ws://127.0.0.1:{port}/channels", count)
            loop = asyncio.new_event_loop()
            ready, stop = asyncio.Event(), asyncio.Event()
            runner = threading.Thread(
                target=loop.run_until_complete, args=(subscribers.run(ready, stop),)
            )
            runner.start()
            deadline = time.monotonic() + 120
            while not ready.is_set():
                if time.monotonic() > deadline or not runner.is_alive():
                    raise RuntimeError("the subscribers did not connect")
                time.sleep(0.05)
            try:
                return _measure(
                    f"http://127.0.0.1:{port}/api/", key, subscribers, duration, samples
                )
            finally:
                loop.call_soon_threadsafe(stop.set)
                runner.join(30)
        except Exception as error:
            return {"error": str(error)}
        finally:
            stop_process(process)


if __name__ == "__main__":
    print(json.dumps(run_api_bench("--smoke" in sys.argv, print), indent=1))
