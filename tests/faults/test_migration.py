"""From a lease table KCL 2.x wrote to KCL 3, as an operator rolls it out (docs/deploying.md, "From a KCL 2.x lease
table"): KCL 2.7.2 consumes and stops gracefully, then the shipped KCL 3 starts with
KCL_CLIENT_VERSION_CONFIG=CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X on the same application. It must carry on from
2.x's checkpoints: no record written twice, none lost.

The lease table is created with KCL 3's index before KCL 2.7.2 starts (2.7.2 runs on it unchanged): the local
DynamoDB cannot add the index afterwards, which KCL 3 does on real DynamoDB. So this tests KCL 3 reading and
continuing 2.x's lease items and checkpoints, not the index's creation.
"""

from __future__ import annotations

import pytest

from consumer.tools.kcljars import KCL2_LOCK, install, launcher_command
from consumer.tools.leasetable import coordinator_state, leases
from tests.faults.conftest import Scenario

pytestmark = pytest.mark.faults


@pytest.fixture(scope="session")
def kcl2_jars(tmp_path_factory: pytest.TempPathFactory):
    """The KCL 2.7.2 jars of their lock, verified (downloaded once into .cache/kcl-jars)."""
    folder = tmp_path_factory.mktemp("kcl2-jars")
    install(KCL2_LOCK, folder)
    return folder


def test_kcl3_continues_a_kcl2_lease_table_without_repeating_or_losing_a_record(scenario, kcl2_jars):
    run: Scenario = scenario(input_shards=2)
    run.load(600, rate=300, start_ride_id=1).result()
    kcl2 = run.start(
        "worker-kcl2",
        command=launcher_command(KCL2_LOCK),
        KCL_JAR_DIR=str(kcl2_jars),
    )
    run.wait_until_accounted(600, timeout=300)
    assert kcl2.stop(timeout=90) == 0, run.tails()
    written_by_2x = leases(run.stack.dynamodb_endpoint, run.application)
    assert {lease["owner"] for lease in written_by_2x.values()} == {"worker-kcl2"}
    assert coordinator_state(run.stack.dynamodb_endpoint, run.application) == {}, "KCL 2.x has no coordinator state"

    load = run.load(400, rate=50, start_ride_id=1001)
    kcl3 = run.start("worker-kcl3", KCL_CLIENT_VERSION_CONFIG="CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X")
    ledger = run.wait_until_accounted(600 + load.result().records_sent, timeout=420)
    run.record(ledger)
    counts = ledger.counts
    assert (counts["missing"], counts["duplicated"]) == (0, 0), ledger.as_dict()
    assert {lease["owner"] for lease in leases(run.stack.dynamodb_endpoint, run.application).values()} == {
        "worker-kcl3"
    }
    migration = coordinator_state(run.stack.dynamodb_endpoint, run.application)["Migration3.0"]
    assert migration["cv"] == "CLIENT_VERSION_UPGRADE_FROM_2X", migration
    assert kcl3.stop(timeout=90) == 0, run.tails()
