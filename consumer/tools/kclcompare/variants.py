"""What the comparison compares: a jar set (its lock), the daemon properties on top of the shipped template, and
whether the development tools create the lease table first (KCL 3 on the local DynamoDB needs it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from consumer.tools.kcljars import KCL3_LOCK, SHIPPED_LOCK

__all__ = ["VARIANTS", "Variant"]


@dataclass(frozen=True)
class Variant:
    """One daemon configuration of the comparison."""

    key: str
    title: str
    lock: Path
    #: Daemon properties set on top of the template and the local stack's tuning (KCL_EXTRA_PROPERTIES).
    properties: dict[str, str] = field(default_factory=dict)
    #: KCL 3: the lease table with its index made by the tools (dynalite cannot add the index); KCL 2.x makes its own.
    precreate_lease_table: bool = True
    #: KCL 3 assigns leases from a leader holding a lock; KCL 2.x has none (every worker takes leases itself).
    has_leader: bool = True


VARIANTS: dict[str, Variant] = {
    variant.key: variant
    for variant in (
        Variant("kcl3", "KCL 3.1.3", KCL3_LOCK),
        Variant("kcl2", "KCL 2.7.2 (shipped)", SHIPPED_LOCK, precreate_lease_table=False, has_leader=False),
    )
}
