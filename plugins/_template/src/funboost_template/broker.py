"""DirectoryBroker: one file per message. ready/ -> (atomic rename) -> inflight/<consumer>/ -> deleted.

Everything a broker plugin needs is here: a kind name, honest capabilities, an options model that
also reads environment variables, an availability check, and the eight data-path methods.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

from pydantic import Field

from funboost.paths import user_data_dir
from funboost.plugins.broker import Broker, BrokerOptions, Capabilities, Delivery, OutgoingMessage, QueueSize


class DirectoryOptions(BrokerOptions):
    """``broker_exclusive_config`` keys (unknown keys are rejected)."""

    directory: str = Field(default_factory=lambda: os.environ.get("FUNBOOST_TEMPLATE_DIR")
                           or str(user_data_dir() / "template_dir"))
    poll_interval: float = 0.02


class DirectoryBroker(Broker):
    kind = "template_dir"
    aliases = ("dir_queue",)
    options_model = DirectoryOptions
    capabilities = Capabilities(
        at_least_once=False,  # a SIGKILLed consumer's in-flight files are not reclaimed
        persistent=True, native_requeue=True, dead_letter=True, native_delay=False, priority=False,
        ordering="fifo", queue_size="exact", in_flight_count=True, purge=True)

    def __init__(self, queue_name: str, options: Optional[DirectoryOptions] = None) -> None:
        super().__init__(queue_name, options)
        self.options: DirectoryOptions  # what parse_options made from options_model (for type checkers)
        root = Path(self.options.directory) / queue_name
        self.ready = root / "ready"
        self.inflight = root / "inflight" / self.consumer_id.replace(":", "_")
        self.ready.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self._lock = threading.Lock()

    @classmethod
    def check_available(cls, options: DirectoryOptions) -> Optional[str]:
        try:
            Path(options.directory).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {options.directory}: {exc}"
        return None

    def _name(self) -> str:
        # sortable by time, unique across processes: FIFO by file name
        with self._lock:
            self._seq += 1
            return f"{time.time_ns():020d}-{os.getpid()}-{self._seq:08d}-{uuid.uuid4().hex[:6]}.json"

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            name = self._name()
            tmp = self.ready.parent / f".{name}.tmp"
            tmp.write_text(m.body, encoding="utf-8")
            os.replace(tmp, self.ready / name)  # atomic: consumers never see half a file

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            out = self._take(max_count)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(self.options.poll_interval, max(0.0, deadline - time.monotonic())))

    def _take(self, max_count: int) -> list[Delivery]:
        out: list[Delivery] = []
        self.inflight.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(self.ready))[:max_count * 2]:
            try:
                os.rename(self.ready / name, self.inflight / name)  # atomic claim
            except FileNotFoundError:
                continue  # another consumer took it
            out.append(Delivery(body=(self.inflight / name).read_text(encoding="utf-8"), tag=name))
            if len(out) >= max_count:
                break
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            try:
                os.remove(self.inflight / d.tag)
            except FileNotFoundError:
                pass

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            try:
                os.rename(self.inflight / d.tag, self.ready / d.tag)  # keeps its place in line
            except FileNotFoundError:
                pass

    def queue_size(self) -> QueueSize:
        in_flight = 0
        root = self.ready.parent / "inflight"
        if root.exists():
            in_flight = sum(len(os.listdir(p)) for p in root.iterdir())
        return QueueSize(ready=len(os.listdir(self.ready)), in_flight=in_flight, delayed=0)

    def purge(self) -> int:
        n = 0
        for name in os.listdir(self.ready):
            try:
                os.remove(self.ready / name)
                n += 1
            except FileNotFoundError:
                pass
        return n
