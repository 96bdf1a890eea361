"""A real Prometheus scrapes the consumer through a run on the real daemon, and what it stores agrees with the
run's ledger: records in and out per shard, dead letters by reason, the in/out rates of a live replay, each
shard's lag batch by batch and the arrival time of its newest record. The same run checks the dashboard's
queries and the alert rules against the real /metrics, the health endpoints, and that the container output is
JSON lines throughout."""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.tools.harness import POISON_RECORDS, wait_for
from consumer.tools.ledger import Outcome, read_ledger, read_stream
from consumer.tools.paths import REPO_ROOT
from consumer.tools.replay import put_payloads, replay
from tests.support.probes import http_get
from tests.support.prometheus import PrometheusServer, dashboard_builder, metric_names, tool

RULES = REPO_ROOT / "alerts" / "ride-consumer.rules.yml"
#: Records per GetRecords call, so that the backlog comes in several batches whose lag the ledger can predict.
MAX_RECORDS = 100
BACKLOG_RIDES = 1200
LIVE_RIDES = 300


def is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def scalar(prometheus: PrometheusServer, expr: str, at: float | None = None) -> float | None:
    result = prometheus.query(expr, at)
    return float(result[0]["value"][1]) if result else None


def by_label(prometheus: PrometheusServer, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(item["metric"].get(label, "") for label in labels): float(item["value"][1])
        for item in prometheus.query(expr)
    }


def expected_lags(arrivals: list[float], batch: int) -> set[float]:
    """What each batch of a backlog read ``batch`` records at a time reports as millisBehindLatest (in seconds):
    how much older its last record is than the newest record of the shard."""
    newest = arrivals[-1]
    return {
        round(newest - arrivals[min(end, len(arrivals)) - 1], 3) for end in range(batch, len(arrivals) + batch, batch)
    }


@pytest.fixture
def prometheus_installed() -> str:
    return tool("prometheus")


def test_prometheus_sees_what_the_ledger_says(
    prometheus_installed, local_stack, streams, start_consumer, registered_model, trips_file, tmp_path
):
    kinesis = local_stack.kinesis_client()
    # A backlog spread over a few seconds of arrival times, then poison, all before the consumer starts.
    replay(
        trips_file,
        client=kinesis,
        stream_name=streams.input,
        limit=BACKLOG_RIDES,
        rate_per_second=200,
        skip_invalid=True,
        progress=False,
    )
    put_payloads(kinesis, streams.input, POISON_RECORDS)
    backlog = read_stream(kinesis, streams.input)
    assert len(backlog) == BACKLOG_RIDES + len(POISON_RECORDS)
    arrivals: dict[str, list[float]] = defaultdict(list)
    for record in sorted(backlog, key=lambda record: (record.shard_id, int(record.sequence_number))):
        assert record.arrival is not None
        arrivals[record.shard_id].append(record.arrival.timestamp())

    consumer = start_consumer(KCL_MAX_RECORDS=str(MAX_RECORDS), KCL_IDLE_TIME_BETWEEN_READS_MS="1000")
    url = wait_for(consumer.metrics_url, timeout=120, interval=0.5)
    assert url, consumer.tail()
    prometheus = PrometheusServer(tmp_path / "prometheus", [url.removeprefix("http://")], rule_files=[RULES]).start()
    try:
        # --- the backlog -------------------------------------------------------------------------------------
        started = time.time()
        caught_up = wait_for(
            lambda: scalar(prometheus, "sum(ride_consumer_records_received_total)") == len(backlog),
            timeout=240,
            interval=1,
        )
        assert caught_up, f"{prometheus.query('ride_consumer_records_received_total')}\n{consumer.tail()}"
        assert http_get(url + "/readyz")[0] == 200
        assert http_get(url + "/healthz")[0] == 200

        lag_samples: dict[str, list[float]] = defaultdict(list)
        for item in prometheus.query_range("ride_consumer_seconds_behind_latest", started - 5, time.time(), 0.5):
            lag_samples[item["metric"]["shard_id"]] += [float(value) for _, value in item["values"]]
        assert set(lag_samples) == set(arrivals)
        for shard_id, samples in lag_samples.items():
            allowed = expected_lags(arrivals[shard_id], MAX_RECORDS)
            unexplained = {value for value in samples if min(abs(value - lag) for lag in allowed) > 0.002}
            assert not unexplained, (shard_id, sorted(unexplained), sorted(allowed))
            assert max(samples) > 0, (shard_id, "no batch behind the tip was scraped")

        # --- a live replay while it runs ---------------------------------------------------------------------
        time.sleep(3)  # flat counters before
        live_started = time.time()
        replay(
            trips_file,
            client=kinesis,
            stream_name=streams.input,
            limit=LIVE_RIDES,
            rate_per_second=100,
            start_ride_id=100_001,
            skip_rows=5_000,
            skip_invalid=True,
            progress=False,
        )
        total = len(backlog) + LIVE_RIDES
        done = wait_for(
            lambda: scalar(prometheus, "sum(ride_consumer_records_received_total)") == total,
            timeout=120,
            interval=1,
        )
        assert done, consumer.tail()
        time.sleep(max(3.0, 25 - (time.time() - live_started)))  # flat counters after; a window of at least 25 s
        live_ended = time.time()
        ledger = read_ledger(kinesis, streams.input, streams.predictions, streams.dead_letters)
        assert ledger.complete and ledger.counts["in"] == total and not ledger.duplicated, ledger.as_dict()

        # --- counts: per shard, per reason -------------------------------------------------------------------
        fates_in = Counter(fate.shard_id for fate in ledger.records)
        predicted = Counter(fate.shard_id for fate in ledger.records if fate.outcome is Outcome.PREDICTED)
        dead = Counter((fate.shard_id, fate.reason) for fate in ledger.records if fate.outcome is Outcome.DEAD_LETTERED)
        received = by_label(prometheus, "ride_consumer_records_received_total", "shard_id")
        written = by_label(prometheus, "ride_consumer_predictions_written_total", "shard_id")
        dead_letters = by_label(prometheus, "ride_consumer_dead_letters_total > 0", "shard_id", "reason")
        assert received == {(shard,): float(count) for shard, count in fates_in.items()}
        assert written == {(shard,): float(count) for shard, count in predicted.items()}
        assert dead_letters == {key: float(count) for key, count in dead.items()}
        assert sum(dead.values()) == len(POISON_RECORDS)

        # --- rates over the live replay: rate x window = the ledger's count ---------------------------------
        window = math.ceil(live_ended - live_started) + 2  # it starts inside the flat stretch before the replay
        in_count = scalar(prometheus, f"sum(increase(ride_consumer_records_received_total[{window}s]))", live_ended)
        out_count = scalar(
            prometheus,
            f"sum(increase(ride_consumer_predictions_written_total[{window}s]))"
            f" + sum(increase(ride_consumer_dead_letters_total[{window}s]))",
            live_ended,
        )
        exact_in = scalar(prometheus, "sum(ride_consumer_records_received_total)", live_ended) - scalar(
            prometheus, "sum(ride_consumer_records_received_total)", live_started
        )
        assert exact_in == LIVE_RIDES
        # increase() extrapolates to the window's edges: at most 2 x 1.1 scrape intervals over the sampled range
        for extrapolated in (in_count, out_count):
            assert extrapolated is not None and LIVE_RIDES <= extrapolated <= LIVE_RIDES * window / (window - 2.2)
        peak_in = max(
            float(value)
            for _, value in prometheus.query_range(
                "sum(rate(ride_consumer_records_received_total[5s]))", live_started, live_ended, 1
            )[0]["values"]
        )

        # --- lag and the newest record once caught up --------------------------------------------------------
        final = read_stream(kinesis, streams.input)
        newest = {shard: max(r.arrival.timestamp() for r in final if r.shard_id == shard) for shard in arrivals}
        lag_now = by_label(prometheus, "ride_consumer_seconds_behind_latest", "shard_id")
        newest_seen = by_label(prometheus, "ride_consumer_newest_record_timestamp_seconds", "shard_id")
        assert lag_now == {(shard,): 0.0 for shard in arrivals}
        for shard, arrival in newest.items():
            assert abs(newest_seen[(shard,)] - arrival) < 0.002, (shard, newest_seen, newest)

        # --- health as Prometheus saw it, and the alert rules ------------------------------------------------
        assert scalar(prometheus, "ride_consumer_ready") == 1
        assert scalar(prometheus, "ride_consumer_daemon_up") == 1
        assert scalar(prometheus, "sum(ride_consumer_leases_held)") == len(arrivals)
        assert scalar(prometheus, "ride_consumer_model_info", None) == 1
        [info] = prometheus.query("ride_consumer_model_info")
        assert info["metric"]["version"] == registered_model.version
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert len(rules) == 6 and all(rule["health"] == "ok" for rule in rules), rules
        assert prometheus.query('ALERTS{alertstate="firing"}') == []

        # --- the dashboard against the real /metrics and Prometheus ------------------------------------------
        status, text = http_get(url + "/metrics")
        assert status == 200
        exported = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
        board = dashboard_builder()
        document = json.loads(board.OUTPUT.read_text())
        for expr in board.queries(document):
            assert metric_names(expr, board.QUERY_VARIABLES) <= exported, expr
            concrete = expr
            for variable, value in board.QUERY_VARIABLES.items():
                concrete = concrete.replace(variable, value)
            assert prometheus.query(concrete), f"no data: {concrete}"
        for rule in rules:
            assert metric_names(rule["query"]) <= exported, rule["name"]

        figures = {
            "ledger": {"in": dict(fates_in), "predicted": dict(predicted), "dead_lettered": sum(dead.values())},
            "prometheus": {
                "received": {key[0]: value for key, value in received.items()},
                "written": {key[0]: value for key, value in written.items()},
                "dead_letters_by_reason": {f"{k[0]}/{k[1]}": v for k, v in dead_letters.items()},
                "lag_samples_seconds": {shard: sorted(set(values)) for shard, values in lag_samples.items()},
                "lag_now": {key[0]: value for key, value in lag_now.items()},
                f"live_in_increase_{window}s": in_count,
                f"live_out_increase_{window}s": out_count,
                "live_peak_in_rate_5s": peak_in,
            },
        }
        print("\nPrometheus vs ledger:", json.dumps(figures, indent=1, sort_keys=True))
        (tmp_path / "metrics-sample.txt").write_text(text)
    finally:
        prometheus.stop()

    assert consumer.stop() == 0, consumer.tail()
    lines = consumer.log_path.read_text().splitlines()
    not_json = [line for line in lines if not is_json_object(line)]
    assert not not_json, not_json[:5]
    events = [json.loads(line) for line in lines]
    assert {"launcher", "kcl", "record_processor"} <= {event.get("component") for event in events}
    [started] = [event for event in events if event["event"] == "daemon_started"]
    assert started["model_version"] == registered_model.version
    batches = [event for event in events if event["event"] == "batch_done"]
    assert batches and all(
        event["model_version"] == registered_model.version
        and event["shard_id"] in arrivals
        and event["batch_size"] <= MAX_RECORDS
        and int(event["first_sequence_number"]) <= int(event["last_sequence_number"])
        for event in batches
    )
