"""What the comparison compares: a jar set (its lock), the daemon properties on top of the shipped template, and
whether the development tools create the lease table first (KCL 3 on the local DynamoDB needs it). The service
ships KCL 2.7.2 (:data:`consumer.tools.kclcompare.decision.SHIPPED`); KCL 3's own properties are the variant's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from consumer.tools.kcljars import KCL3_LOCK, SHIPPED_LOCK

__all__ = ["KCL3_PROPERTIES", "VARIANTS", "Variant"]

#: KCL 3's own properties, as the comparison ran them.
KCL3_PROPERTIES = {"disableWorkerMetrics": "true", "clientVersionConfig": "CLIENT_VERSION_CONFIG_3X"}


@dataclass(frozen=True)
class Variant:
    """One daemon configuration of the comparison."""

    key: str
    title: str
    lock: Path
    #: Daemon properties set on top of the template and the local stack's tuning (KCL_EXTRA_PROPERTIES).
    properties: dict[str, str] = field(default_factory=dict)
    #: KCL 3: the lease table with its index made by the tools (dynalite cannot add the index); KCL 2.x makes its own.
    precreate_lease_table: bool = False
    #: KCL 3 assigns leases from a leader holding a lock; KCL 2.x has none (every worker takes leases itself).
    has_leader: bool = False


VARIANTS: dict[str, Variant] = {
    variant.key: variant
    for variant in (
        Variant(
            "kcl3",
            "KCL 3.1.3",
            KCL3_LOCK,
            # No worker metrics: KCL 3 would probe ECS, EKS and EC2 instance metadata (169.254.169.254) for its CPU;
            # a new application's client version (KCL 2.x ignores both keys).
            properties=KCL3_PROPERTIES,
            precreate_lease_table=True,
            has_leader=True,
        ),
        Variant("kcl2", "KCL 2.7.2 (shipped)", SHIPPED_LOCK),
    )
}
