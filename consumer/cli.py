"""The command line: ``python -m consumer run | score | serve | train | replay | tail | ledger | demo | bench |
kcl-compare``.

Every command configures JSON logs on stderr first. ``run`` is the service (the stream); ``score`` (a month file)
and ``serve`` (the web endpoint) deploy the same model the other two ways (:mod:`consumer.serving`). The others
are development tools (:mod:`consumer.tools`), imported only when called: the image ships the three deployments
without them, and there they answer with a message saying so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from consumer.errors import ConsumerError
from consumer.runtime.logs import configure_logging

if TYPE_CHECKING:
    from consumer.runtime.aws import KinesisClient

__all__ = ["main"]


def _require_tools() -> None:
    """The development tools live in a checkout of the repository (``make setup``), not in the image."""
    import importlib.util

    if importlib.util.find_spec("consumer.tools") is None:
        raise click.ClickException(
            "this is a development tool and it is not installed here (the image ships `run`, `score` and `serve`); "
            "use a checkout of the repository (`make setup`)"
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Ride-duration streaming consumer (KCL MultiLangDaemon + Python record processors)."""


@cli.command()
def run() -> None:
    """Start the service: verify the jars, prepare the model, start the KCL daemon, supervise it.

    Configured by environment variables (docs/operating.md, "Settings"). Exits with the daemon's status.
    """
    from consumer.runtime.launcher import run as launch
    from consumer.runtime.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, component="launcher")
    sys.exit(launch(settings))


@cli.command()
@click.option("--input", "source", required=True, help="The TLC trip file (parquet): a local path or s3://bucket/key.")
@click.option(
    "--output", "destination", required=True, help="Where the predictions go: a local path or s3://bucket/key."
)
@click.option("--year", type=click.IntRange(1900, 2999), default=None, help="Year of the ride ids (with --month).")
@click.option("--month", type=click.IntRange(1, 12), default=None, help="Month of the ride ids (with --year).")
@click.option(
    "--batch-rows", type=click.IntRange(min=1), default=50_000, show_default=True, help="Rows scored per predict call."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def score(source: str, destination: str, year: int | None, month: int | None, batch_rows: int, as_json: bool) -> None:
    """Score a TLC month file with the model of MODEL_URI: one output row per input row (ride_id, predicted_duration,
    model_version, the features, actual_duration, and the reason of any row not scored).

    The ride ids' month: --year/--month, else the TLC file name, else the month most pickups fall in. Progress goes
    to stderr (JSON logs), the summary to stdout.
    """
    from consumer.runtime.settings import load_serving_settings
    from consumer.serving.batch import score_month

    if (year is None) != (month is None):
        raise click.UsageError("give --year and --month together (or neither: the file tells the month)")
    settings = load_serving_settings()
    configure_logging(settings.log_level, component="score")
    summary = score_month(settings, source, destination, year=year, month=month, batch_rows=batch_rows)
    click.echo(summary.as_json() if as_json else summary.describe())


@cli.command()
def serve() -> None:
    """The web endpoint: POST /predict with a ride (or a list) answers {"duration", "model_version"}, as the course's
    Flask service did; /healthz, /readyz, /metrics. On SERVE_PORT (9696) with SERVE_WORKERS workers sharing the
    model of MODEL_URI, prepared once before they start."""
    from consumer.runtime.settings import load_serving_settings
    from consumer.serving.server import serve as start

    settings = load_serving_settings()
    configure_logging(settings.log_level, component="web")
    start(settings)


@cli.command()
@click.option(
    "--data", "trips", default=None, help="TLC parquet (path or URL). Default: ../shared/data's January 2022."
)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI. Default: a local sqlite store in .local/mlflow.",
)
@click.option("--name", "registered_name", default="ride-duration", show_default=True, help="Registered model name.")
@click.option("--alias", default="production", show_default=True, help="Alias set on the new version.")
@click.option(
    "--format",
    "serialization_format",
    type=click.Choice(["skops", "cloudpickle"]),
    default="skops",
    show_default=True,
    help="How MLflow serializes the pipeline.",
)
def train(
    trips: str | None, tracking_uri: str | None, registered_name: str, alias: str, serialization_format: str
) -> None:
    """Train the DictVectorizer + RandomForest pipeline, log it to MLflow, register it and print the RMSE."""
    _require_tools()
    from consumer.tools.paths import DEFAULT_TRIPS, LOCAL_DIR
    from consumer.tools.training import local_store
    from consumer.tools.training import train as fit

    configure_logging("INFO", component="train")
    artifacts = None
    if tracking_uri is None:
        tracking_uri, artifacts = local_store(LOCAL_DIR / "mlflow")
    result = fit(
        trips or DEFAULT_TRIPS,
        tracking_uri=tracking_uri,
        registered_name=registered_name,
        alias=alias,
        serialization_format=serialization_format,
        artifact_location=artifacts,
    )
    click.echo(f"validation RMSE {result.rmse:.3f} minutes ({result.rows_val} rides of the last week)")
    click.echo(f"registered {registered_name} version {result.version} as @{alias}: {result.model_uri}")
    click.echo(f"tracking URI: {tracking_uri}")


def _kinesis() -> KinesisClient:
    from consumer.runtime.aws import kinesis_client

    return kinesis_client()  # region, credentials and AWS_ENDPOINT_URL_KINESIS from the environment


@cli.command()
@click.option("--stream", envvar="INPUT_STREAM_NAME", required=True, help="Input stream (default $INPUT_STREAM_NAME).")
@click.option("--data", "trips", default=None, help="TLC parquet (path or URL).")
@click.option("--limit", type=int, default=1000, show_default=True, help="How many rides.")
@click.option("--rate", type=float, default=None, help="Rides per second (default: as fast as possible).")
@click.option("--start-ride-id", type=int, default=1, show_default=True)
@click.option(
    "--skip-invalid/--keep-invalid",
    default=False,
    show_default=True,
    help="Leave out rides the consumer would dead-letter.",
)
def replay(
    stream: str, trips: str | None, limit: int, rate: float | None, start_ride_id: int, skip_invalid: bool
) -> None:
    """Put rides from a TLC parquet onto a stream with PutRecords, showing progress and a summary."""
    _require_tools()
    from consumer.tools.paths import DEFAULT_TRIPS
    from consumer.tools.replay import replay as send

    configure_logging("INFO", component="replay")
    summary = send(
        trips or DEFAULT_TRIPS,
        client=_kinesis(),
        stream_name=stream,
        limit=limit,
        rate_per_second=rate,
        start_ride_id=start_ride_id,
        skip_invalid=skip_invalid,
    )
    click.echo(
        f"sent {summary.records_sent} rides in {summary.seconds:.1f}s ({summary.records_per_second:.0f}/s); "
        f"{summary.put_requests} PutRecords calls, {summary.resent_entries} entries resent; "
        f"per shard {summary.per_shard}"
    )


@cli.command()
@click.option(
    "--stream",
    envvar="PREDICTIONS_STREAM_NAME",
    required=True,
    help="Stream to read (default $PREDICTIONS_STREAM_NAME).",
)
@click.option("--follow", is_flag=True, help="Keep reading new records.")
@click.option("--max-records", type=int, default=None, help="Stop after this many.")
@click.option("--decode-payloads", is_flag=True, help="Dead-letter events: decode payload_base64 too.")
@click.option("--events-only", is_flag=True, help="Print just the events, without shard and sequence.")
def tail(stream: str, follow: bool, max_records: int | None, decode_payloads: bool, events_only: bool) -> None:
    """Print a stream's events from TRIM_HORIZON as JSON lines (what get-records | base64 --decode did)."""
    _require_tools()
    from consumer.tools.tail import print_records

    configure_logging("WARNING", component="tail")
    count = print_records(
        _kinesis(),
        stream,
        follow=follow,
        max_records=max_records,
        envelope=not events_only,
        decode_payloads=decode_payloads,
    )
    click.echo(f"{count} records", err=True)


@cli.command()
@click.option("--input", "input_stream", envvar="INPUT_STREAM_NAME", required=True, help="Default $INPUT_STREAM_NAME.")
@click.option(
    "--predictions", envvar="PREDICTIONS_STREAM_NAME", required=True, help="Default $PREDICTIONS_STREAM_NAME."
)
@click.option(
    "--dead-letters", envvar="DEAD_LETTER_STREAM_NAME", required=True, help="Default $DEAD_LETTER_STREAM_NAME."
)
@click.option(
    "--settle",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds: a record without events that arrived this recently is in flight, not missing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts and example ids as one JSON object.")
def ledger(input_stream: str, predictions: str, dead_letters: str, settle: float, as_json: bool) -> None:
    """Account for every input record: predicted, dead-lettered, duplicated (same event id) or missing.

    Reads the three streams from TRIM_HORIZON. Exits 1 when a record is missing or decided twice, or an event
    does not belong to its record; records still in flight (see --settle) are not an error.
    """
    import orjson

    _require_tools()
    from consumer.tools.ledger import format_ledger, read_ledger

    configure_logging("WARNING", component="ledger")
    result = read_ledger(_kinesis(), input_stream, predictions, dead_letters, settle_seconds=settle)
    if as_json:
        click.echo(orjson.dumps(result.as_dict()).decode())
    else:
        click.echo(f"ledger of {input_stream} -> {predictions} + {dead_letters}")
        click.echo(format_ledger(result))
    sys.exit(0 if result.sound else 1)


@cli.command()
@click.option("--rides", type=int, default=3000, show_default=True, help="How many real rides to replay.")
@click.option("--data", "trips", default=None, help="TLC parquet (path or URL).")
@click.option("--local-dir", type=click.Path(path_type=Path), default=None, help="State folder (default .local/).")
def demo(rides: int, trips: str | None, local_dir: Path | None) -> None:
    """Run everything locally: emulators, streams, model, the consumer, a replay, and the results."""
    _require_tools()
    from consumer.tools.demo import run_demo
    from consumer.tools.paths import DEFAULT_TRIPS, LOCAL_DIR

    configure_logging("WARNING", component="demo")
    sys.exit(run_demo(rides=rides, trips=trips or DEFAULT_TRIPS, local_dir=local_dir or LOCAL_DIR))


@cli.command()
@click.option("--quick", is_flag=True, help="One short run of every section (the CI smoke, ~2 minutes).")
@click.option("--runs", type=int, default=None, help="Runs per figure (medians are reported). Default 3, quick 1.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="The JSON report (default .local/bench/bench.json, or bench-quick.json).",
)
@click.option("--data", "trips", default=None, help="TLC parquet (path or URL); its last week is ridden.")
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the run's files (logs of every process) here instead of a temporary folder.",
)
@click.option(
    "--docs-from",
    "docs_from",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Run nothing: copy this report (a full run's JSON) to docs/performance.json and render docs/performance.md "
    "from it (`make bench-docs`).",
)
@click.option(
    "--docs-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="With --docs-from: the folder of performance.md and performance.json (default: the checkout's docs/).",
)
@click.option(
    "--soak",
    is_flag=True,
    help="Only the metrics soak (docs/metrics-soak.md): process lifetimes against one metrics folder, with "
    "compaction and without. With --docs-from: render docs/metrics-soak.md from a soak report.",
)
@click.option("--lifetimes", type=int, default=None, help="With --soak: how many process lifetimes (default 5,000).")
def bench(
    quick: bool,
    runs: int | None,
    output: Path | None,
    trips: str | None,
    work_dir: Path | None,
    docs_from: Path | None,
    docs_dir: Path | None,
    soak: bool,
    lifetimes: int | None,
) -> None:
    """Benchmark: Lambda-style baseline vs the processor (MultiLang protocol), latency and memory on the daemon.

    Prints the tables and writes the report as JSON. With --docs-from, renders docs/performance.md from a report.
    """
    import dataclasses
    import tempfile

    _require_tools()
    from consumer.tools.bench import BenchConfig, run_bench, write_performance_docs
    from consumer.tools.paths import LOCAL_DIR, REPO_ROOT

    configure_logging("WARNING", component="bench")
    if soak:
        _soak(output or LOCAL_DIR / "bench" / "soak.json", docs_from, docs_dir or REPO_ROOT / "docs", lifetimes)
        return
    if docs_from is not None:
        page = write_performance_docs(docs_from, docs_dir or REPO_ROOT / "docs")
        click.echo(f"{page} rendered from {docs_from}")
        return
    output = output or LOCAL_DIR / "bench" / ("bench-quick.json" if quick else "bench.json")
    with tempfile.TemporaryDirectory(prefix="consumer-bench-") as temporary:
        work = work_dir or Path(temporary)
        config = BenchConfig.quick_run(output, work) if quick else BenchConfig(output, work)
        if runs is not None:
            config = dataclasses.replace(config, runs=runs)
        run_bench(config, trips=trips)


def _soak(output: Path, docs_from: Path | None, docs_dir: Path, lifetimes: int | None) -> None:
    from consumer.tools.bench.soak import SoakConfig, render_soak_doc, run_soak, write_soak_docs

    if docs_from is not None:
        click.echo(f"{write_soak_docs(docs_from, docs_dir)} rendered from {docs_from}")
        return
    config = SoakConfig() if lifetimes is None else SoakConfig(lifetimes=lifetimes)
    report = run_soak(config, output)
    click.echo(render_soak_doc(report).split("## Figures", 1)[1].strip())
    click.echo(f"report: {output}")


@cli.command("kcl-compare")
@click.option("--variant", "variants", multiple=True, help="Only these variants (repeat the option). Default: all.")
@click.option("--output", type=click.Path(path_type=Path), help="The JSON report (default .local/kcl-compare/).")
@click.option("--data", "trips", default=None, help="TLC parquet (path or URL); its last week is ridden.")
@click.option("--work-dir", type=click.Path(path_type=Path), help="Every worker's files (default .local/kcl-compare/).")
@click.option(
    "--docs-from",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Run nothing: copy this report to docs/kcl-versions.json and render docs/kcl-versions.md from it.",
)
@click.option("--docs-dir", type=click.Path(path_type=Path, file_okay=False), help="With --docs-from (default docs/).")
def kcl_compare(
    variants: tuple[str, ...],
    output: Path | None,
    trips: str | None,
    work_dir: Path | None,
    docs_from: Path | None,
    docs_dir: Path | None,
) -> None:
    """Compare KCL versions on the real daemon: cold start, join, SIGTERM, SIGKILL of a worker and of the leader,
    duplicates, memory and CPU (docs/kcl-versions.md). About half an hour; run it alone on the machine."""
    _require_tools()
    from consumer.tools.kclcompare.run import command

    configure_logging("WARNING", component="kcl-compare")
    click.echo(command(variants, output=output, trips=trips, work_dir=work_dir, docs_from=docs_from, docs_dir=docs_dir))


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="python -m consumer", standalone_mode=False)
    except ConsumerError as exc:
        print(f"consumer: {exc}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
