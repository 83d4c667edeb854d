"""The size switch of the reliability suite: ``FUNBOOST_RELIABILITY_SIZE=ci`` (default, small enough for
CI's time budget) or ``full`` (the figures in docs/reliability.md, run by scripts/reliability.sh)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Size:
    name: str
    sigkill_tasks: int  # tasks per SIGKILL run
    bad_messages: int  # malformed messages per broker in the bad-input run
    good_messages: int  # good tasks interleaved with them
    large_payload_bytes: int  # the "large payload" malformed message
    fuzz_examples: int  # Hypothesis examples per fuzz test
    restart_tasks: int  # tasks per broker-restart run
    netcut_tasks: int  # tasks before the cut in a network-cut run
    transport_fuzz_cases: int = 400  # fuzz cases per transport server
    soak_tasks: dict = field(default_factory=lambda: {"memory": 200_000, "sqlite": 50_000, "redis_ack_able": 50_000})
    disk_full_fs: str = "1m"  # the tmpfs the sqlite file fills
    disk_full_grow: str = "16m"  # its size once space returns


SIZES = {
    "ci": Size("ci", sigkill_tasks=500, bad_messages=40, good_messages=60, large_payload_bytes=1_000_000,
               fuzz_examples=300,
               restart_tasks=400, netcut_tasks=300),
    "full": Size("full", sigkill_tasks=5000, bad_messages=1000, good_messages=1000,
                 large_payload_bytes=10_000_000, fuzz_examples=5000,
                 restart_tasks=5000, netcut_tasks=3000, disk_full_fs="16m", disk_full_grow="64m",
                 transport_fuzz_cases=5000,
                 soak_tasks={"memory": 1_000_000, "sqlite": 200_000, "redis_ack_able": 200_000}),
}


def current_size() -> Size:
    name = os.environ.get("FUNBOOST_RELIABILITY_SIZE", "ci")
    if name not in SIZES:
        raise ValueError(f"FUNBOOST_RELIABILITY_SIZE={name!r}: expected one of {sorted(SIZES)}")
    return SIZES[name]


SIZE = current_size()
