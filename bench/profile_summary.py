"""Summarise a py-spy collapsed-stack file (`--profile X.svg` of the benches writes `X.txt` beside it).

Prints, over the samples where a thread was doing something (idle waits dropped: the event loop
in epoll, worker threads waiting for work): the share per owner (the service or protocol callback
the stack runs under, so a regression names its owner) and the top frames by self samples.
py-spy samples wall time of active threads: time inside a system call (a socket write that wakes
the peer) counts, and on a loaded machine so does waiting for a CPU; the benches' CPU figures come
from /proc, not from here.

Usage: python bench/profile_summary.py bench/results/cpu_all.txt [--top 15]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

IDLE = (
    "Runner.run (asyncio/runners.py:118)",
    "Condition.wait",
    "_worker (concurrent/futures/thread.py:81)",
    "select (selectors.py",
    "Event.wait",
    "Queue.get",
)
OWNER = re.compile(
    r"(\w+Service\.\w+|ModbusServer\.\w+|_Connection\.\w+|BusOwner\.\w+|BusPoller\.\w+"
    r"|RequestResponseCycle\.run_asgi|Recorder\.\w+|Thread\.run|Client\.\w+ \(paho)"
)


def summarise(path: Path, top: int) -> list[str]:
    owners: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[str] = collections.Counter()
    total = active = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        stack_frames = [f for f in stack.split(";") if f]
        if not stack_frames or any(stack_frames[-1].startswith(i) for i in IDLE):
            continue
        active += n
        owner = next((m.group(1) for f in stack_frames if (m := OWNER.match(f))), "other")
        owners[owner] += n
        frames[stack_frames[-1]] += n
    out = [f"{path.name}: {total} samples, {active} active"]
    out += [f"  {100 * n / max(active, 1):5.1f} %  {name}" for name, n in owners.most_common(top)]
    out.append("  top frames (self):")
    out += [f"  {100 * n / max(active, 1):5.1f} %  {name}" for name, n in frames.most_common(top)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for f in args.files:
        print("\n".join(summarise(f, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
