"""The host firewall rules that close the host to tenant containers, installed by the worker at start.

Tenant bridges are all named ``bt...`` (worker.tenant_networks), so one chain matches them as ``-i bt+``:

    -A INPUT -j BERTH-INPUT                  (first in INPUT)
    BERTH-INPUT:
      -i bt+ -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT    answers to the host's own connections
      -i bt+ -d <tenant pool> -p udp --dport 53 -j ACCEPT             the internal DNS on each gateway IP
      -i bt+ -d <tenant pool> -p tcp --dport 53 -j ACCEPT
      -i bt+ -j DROP                                                  everything else a tenant sends the host

INPUT is where every packet a container sends to any host address arrives (its own gateway IP, another
bridge's gateway, eth0's address), including connections to ports published on a non-loopback host address:
Docker's ``nat DOCKER -i <bridge> -j RETURN`` leaves them to its userland proxy (docker-proxy listens on the
host), so without this chain tenant A reaches tenant B's port published on, say, B's gateway IP. Traffic
between two tenant bridges is forwarded, never delivered, and Docker's DOCKER-ISOLATION-STAGE-1/2 chains drop
it; no DOCKER-USER rule is needed for that (tests/e2e/test_tenant_isolation.py proves both).

Installing is idempotent (``iptables -C`` before each change) and safe with several workers on one host: the
accept rules are inserted at the top, the drop appended once at the bottom, and nothing is ever flushed. The
rules stay when the worker stops (containers keep running and stay closed off).
"""

from __future__ import annotations

import asyncio
import shutil

from shared.observability import get_logger, log_event
from worker.tenant_networks import BRIDGE_PREFIX

logger = get_logger("worker")

CHAIN = "BERTH-INPUT"
TENANT_INTERFACES = BRIDGE_PREFIX + "+"


class FirewallError(Exception):
    """iptables is missing or refused a rule: tenant containers would reach the host."""


def input_rules(pool: str, dns_port: int = 53) -> tuple[list[list[str]], list[str]]:
    """The chain's accept rules (each inserted at the top when missing) and its final drop."""
    accepts = [
        ["-i", TENANT_INTERFACES, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-i", TENANT_INTERFACES, "-d", pool, "-p", "udp", "--dport", str(dns_port), "-j", "ACCEPT"],
        ["-i", TENANT_INTERFACES, "-d", pool, "-p", "tcp", "--dport", str(dns_port), "-j", "ACCEPT"],
    ]
    return accepts, ["-i", TENANT_INTERFACES, "-j", "DROP"]


async def _iptables(*args: str) -> tuple[int, str]:
    binary = shutil.which("iptables")
    if binary is None:
        raise FirewallError("iptables is not installed")
    process = await asyncio.create_subprocess_exec(
        binary, "-w", "5", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    return process.returncode or 0, err.decode(errors="replace").strip()


async def _ensure(chain: str, rule: list[str], *, insert: bool) -> bool:
    """Add ``rule`` to ``chain`` unless it is there; True when it was added."""
    present, _ = await _iptables("-C", chain, *rule)
    if present == 0:
        return False
    code, err = await _iptables("-I" if insert else "-A", chain, *(["1"] if insert else []), *rule)
    if code != 0:
        raise FirewallError(f"iptables refused a rule in {chain}: {err}")
    return True


async def install_tenant_firewall(pool: str, dns_port: int = 53) -> int:
    """Create the chain and its rules where missing; returns how many rules were added."""
    code, err = await _iptables("-N", CHAIN)
    if code != 0 and "exists" not in err.lower():
        raise FirewallError(f"iptables could not create the chain {CHAIN}: {err}")
    accepts, drop = input_rules(pool, dns_port)
    added = 0
    # The drop goes at the bottom first, then the accepts above it (reversed: inserting each at the top).
    added += await _ensure(CHAIN, drop, insert=False)
    for rule in reversed(accepts):
        added += await _ensure(CHAIN, rule, insert=True)
    added += await _ensure("INPUT", ["-j", CHAIN], insert=True)
    if added:
        log_event(logger, "tenant firewall installed", chain=CHAIN, rules_added=added, pool=pool)
    return added
