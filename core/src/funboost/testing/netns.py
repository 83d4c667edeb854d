"""A private network link for fault tests: a network namespace joined to the host by a veth pair, with a
/30 of its own, so that a test can run a consumer "on another host" and cut its link mid-run without
touching any other traffic (root only; iproute2).

    with NetnsLink() as link:
        server = PrivateRedis(host=link.host_addr)      # listens on the host side of the pair
        ConsumerProcess(..., netns=link.namespace)      # a consumer that reaches it only over the veth
        link.cut()                                      # the host side goes down: its packets are dropped
        link.restore()

``tc netem`` (loss, latency) needs the kernel's sch_netem; ``netem_available()`` says whether it is there.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from typing import Optional

__all__ = ["NetnsLink", "netns_unavailable_reason", "netem_available"]


def _ip(*args: str, netns: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip"] + (["netns", "exec", netns, "ip"] if netns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


def netns_unavailable_reason() -> Optional[str]:
    """None when this process may create namespaces and veth pairs, else why not."""
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"fbchk{uuid.uuid4().hex[:8]}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"ip netns add refused: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return None


def netem_available(device: str) -> bool:
    r = subprocess.run(["tc", "qdisc", "add", "dev", device, "root", "netem", "delay", "1ms"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        subprocess.run(["tc", "qdisc", "del", "dev", device, "root"], capture_output=True, timeout=30)
        return True
    return False


class NetnsLink:
    """A namespace ``fb<hex>`` and a veth pair: ``host_addr`` on the host side, ``ns_addr`` inside."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.namespace = f"fb{tag}"
        self.host_dev, self.ns_dev = f"fbh{tag}", f"fbn{tag}"  # interface names: at most 15 characters
        # a random /30 in 10.200.0.0/16 (link-local to this pair: nothing else routes it)
        base = random.randrange(0, 1 << 14) << 2
        prefix = f"10.200.{base >> 8}"
        self.host_addr, self.ns_addr = f"{prefix}.{(base & 0xFF) + 1}", f"{prefix}.{(base & 0xFF) + 2}"
        self._up = False

    def create(self) -> "NetnsLink":
        _ip("netns", "add", self.namespace)
        try:
            _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev)
            _ip("link", "set", self.ns_dev, "netns", self.namespace)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_dev)
            _ip("link", "set", self.host_dev, "up")
            _ip("addr", "add", f"{self.ns_addr}/30", "dev", self.ns_dev, netns=self.namespace)
            _ip("link", "set", self.ns_dev, "up", netns=self.namespace)
            _ip("link", "set", "lo", "up", netns=self.namespace)
        except Exception:
            self.destroy()
            raise
        self._up = True
        return self

    def cut(self) -> None:
        """Take the host side down: the namespace's packets to the host are dropped, and the host's to it
        (no reset is sent either way: each side finds out by its own timeouts)."""
        _ip("link", "set", self.host_dev, "down")
        self._up = False

    def restore(self) -> None:
        _ip("link", "set", self.host_dev, "up")
        # the address's route came down with the link; it comes back with it
        self._up = True

    def destroy(self) -> None:
        _ip("link", "del", self.host_dev, check=False)  # deletes the peer too
        _ip("netns", "del", self.namespace, check=False)

    def __enter__(self) -> "NetnsLink":
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
