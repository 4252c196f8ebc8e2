"""Soak: many users doing mixed API work through the gateway for a bounded time; throughput, p99 latency and
errors per operation, and whether any platform process grew.

A throwaway platform (bench/local_platform.py: ``berth local up`` with a database, Redis prefix and ports of
its own) gets ``--users`` signed-up users, each looping without pause over a mix of calls: who am I, list
images, create an image record, read it, delete it, list containers, list listeners and the discovery
namespaces. After ``--warmup`` seconds the resident memory (RSS) of each platform process is taken (the
gateway, its function processes together, the host worker, lb-runtime, moto); again at the end, after
``--duration`` seconds of load.

Growth bound: a process passes when it grew by less than ``--max-growth-mb`` (30 MB) or by less than
``--max-growth-percent`` (20%) of its size after warm-up, whichever allows more; a steady state needs
neither. The function processes (their number may change as the gateway starts and retires instances) are
held to it by their mean size per process. The exit status is 1 when a process exceeds the bound
or more than ``--max-error-percent`` (1%) of the calls failed.

    .venv/bin/python bench/soak.py [--users 20] [--duration 60] [--warmup 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
from local_platform import Platform, local_platform  # the bench folder is on sys.path

from tests.support.private_services import children_of, rss_bytes

MB = 1024 * 1024
PROCESSES = ("gateway", "worker", "lb-runtime", "local-aws")


def platform_rss(platform: Platform) -> dict[str, tuple[int, int]]:
    """Process name -> (RSS bytes, how many processes); the gateway's function processes as one entry."""
    sizes: dict[str, tuple[int, int]] = {}
    for name in PROCESSES:
        try:
            pid = int((platform.state / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        sizes[name] = (rss_bytes(pid), 1)
        if name == "gateway":
            functions = [child for child in children_of(pid) if _is_function_process(child)]
            sizes["function processes"] = (sum(rss_bytes(child) for child in functions), len(functions))
    return sizes


def _is_function_process(pid: int) -> bool:
    try:
        return b"gateway.function_host" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Figures:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: dict[str, str] = {}

    def record(self, operation: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.latencies[operation].append(seconds)
        if not ok:
            self.errors[operation] += 1
            self.error_samples.setdefault(operation, detail)


async def call(
    client: httpx.AsyncClient, figures: Figures, operation: str, method: str, path: str, **kwargs: object
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        answer = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        figures.record(operation, time.perf_counter() - started, False, f"{type(exc).__name__}: {exc}")
        return None
    ok = answer.status_code < 400
    figures.record(operation, time.perf_counter() - started, ok, f"{answer.status_code} {answer.text[:120]}")
    return answer


async def user_loop(url: str, headers: dict[str, str], figures: Figures, until: float, user: int) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=35) as client:
        round_number = 0
        while time.monotonic() < until:
            round_number += 1
            await call(client, figures, "GET /auth/me", "GET", "/api/auth/me")
            await call(client, figures, "GET /images", "GET", "/api/images")
            created = await call(
                client,
                figures,
                "POST /images",
                "POST",
                "/api/images",
                json={"name": f"soak-{user}", "tag": str(round_number)},
            )
            if created is not None and created.status_code == 201:
                image_id = created.json()["id"]
                await call(client, figures, "GET /images/{id}", "GET", f"/api/images/{image_id}")
                await call(client, figures, "DELETE /images/{id}", "DELETE", f"/api/images/{image_id}")
            await call(client, figures, "GET /containers", "GET", "/api/containers")
            await call(client, figures, "GET /listeners", "GET", "/api/load-balancer/listeners")
            await call(client, figures, "GET /discovery/namespaces", "GET", "/api/service-discovery/namespaces")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report_calls(figures: Figures, seconds: float) -> tuple[int, int]:
    print(f"\n{'operation':<26} {'calls':>7} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    total = failed = 0
    for operation, latencies in figures.latencies.items():
        total += len(latencies)
        failed += figures.errors[operation]
        print(
            f"{operation:<26} {len(latencies):>7} {len(latencies) / seconds:>7.1f} "
            f"{statistics.median(latencies) * 1000:>8.1f} {percentile(latencies, 0.99) * 1000:>8.1f} "
            f"{figures.errors[operation]:>7}"
        )
    print(f"{'all':<26} {total:>7} {total / seconds:>7.1f} {'':>8} {'':>8} {failed:>7}")
    for operation, sample in figures.error_samples.items():
        print(f"  first error of {operation}: {sample}")
    return total, failed


def report_memory(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], max_mb: float, max_percent: float
) -> bool:
    print(f"\n{'process':<36} {'RSS after warm-up':>18} {'RSS at the end':>15} {'growth':>16}  bound")
    within = True
    for name, (total_before, count_before) in before.items():
        total_after, count_after = after.get(name, (0, 0))
        # Per process: the function processes are judged by their mean size.
        size_before, size_after = total_before / max(count_before, 1), total_after / max(count_after, 1)
        growth = size_after - size_before
        allowed = max(max_mb * MB, size_before * max_percent / 100)
        ok = growth <= allowed
        within &= ok
        counts = f" (mean of {count_before}->{count_after})" if name == "function processes" else ""
        print(
            f"{name + counts:<36} {size_before / MB:>15.1f} MB {size_after / MB:>12.1f} MB "
            f"{growth / MB:>+10.1f} MB {100 * growth / max(size_before, 1):>+4.0f}%  "
            f"{'ok' if ok else 'EXCEEDED'} (< {allowed / MB:.0f} MB)"
        )
    return within


async def soak(platform: Platform, users: int, duration: float, warmup: float) -> tuple[Figures, float, dict, dict]:
    with httpx.Client(base_url=platform.url, timeout=60) as client:
        headers = [platform.sign_up(client) for _ in range(users)]
    warm = Figures()
    await asyncio.gather(
        *(user_loop(platform.url, h, warm, time.monotonic() + warmup, index) for index, h in enumerate(headers))
    )
    before = platform_rss(platform)
    figures = Figures()
    started = time.monotonic()
    until = started + duration
    await asyncio.gather(*(user_loop(platform.url, h, figures, until, index) for index, h in enumerate(headers)))
    seconds = time.monotonic() - started
    after = platform_rss(platform)
    return figures, seconds, before, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the first RSS figures")
    parser.add_argument("--max-growth-mb", type=float, default=30.0)
    parser.add_argument("--max-growth-percent", type=float, default=20.0)
    parser.add_argument("--max-error-percent", type=float, default=1.0)
    args = parser.parse_args()

    with local_platform() as platform:
        figures, seconds, before, after = asyncio.run(soak(platform, args.users, args.duration, args.warmup))
    print(f"soak: {args.users} users, {seconds:.0f} s after {args.warmup:.0f} s of warm-up")
    total, failed = report_calls(figures, seconds)
    within = report_memory(before, after, args.max_growth_mb, args.max_growth_percent)
    error_percent = 100 * failed / max(total, 1)
    print(
        f"\nmemory: {'within' if within else 'OUTSIDE'} the bound (growth < {args.max_growth_mb:g} MB or "
        f"< {args.max_growth_percent:g}% per process); errors: {error_percent:.2f}% "
        f"(bound {args.max_error_percent:g}%)"
    )
    return 0 if within and error_percent <= args.max_error_percent else 1


if __name__ == "__main__":
    sys.exit(main())
