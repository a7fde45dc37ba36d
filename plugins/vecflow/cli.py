"""Command line (`python -m vecflow.cli`, or `vecflow`): search the published indexes, serve them,
roll an index back, switch the serving model, import a catalog, train heads and retag, migrate,
acknowledge alerts. The demo's commands (generate-catalog, run, search-server) are
`python -m vecflow.demo`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from vecflow.config import settings

log = logging.getLogger("vecflow.cli")


def _warehouse(s):
    """The settings' warehouse at this code's schema (a fresh VECFLOW_HOME gets its tables, so a
    command on it says what is missing instead of failing on a table)."""
    from vecflow.warehouse import get_warehouse, migrate

    warehouse = get_warehouse(s)
    migrate(warehouse)
    return warehouse


class CommandError(RuntimeError):
    """An expected failure of a command (a missing file, not an image, nothing published): one line
    naming the input, and a non-zero exit; tracebacks are for bugs."""


def cmd_search(args: argparse.Namespace) -> int:
    from vecflow.index.search import SearchError, parse_filters, search
    from vecflow.index.store import index_store
    from vecflow.index.window import published_categories
    from vecflow_model.imaging import DecodeError, decode

    s = settings()
    if not args.image.is_file():
        raise CommandError(f"search: --image {args.image}: no such file")
    try:
        decode(args.image.read_bytes())
    except DecodeError as exc:
        raise CommandError(f"search: --image {args.image} is not an image ({exc})") from None
    published = published_categories(s, s.model_version)
    if not published:
        raise CommandError(f"search: nothing published for model {s.model_version} in {index_store(s).url}")
    if args.category not in (None, "all") and args.category not in published:
        raise CommandError(
            f"search: --category {args.category}: no published index of {s.model_version} "
            f"(published: {', '.join(published)})"
        )
    try:
        flt = parse_filters(args.filter, args.listed_after, args.listed_before)
        results = search(s, args.image, args.k, args.category, flt)
    except SearchError as exc:
        raise CommandError(f"search: {exc}") from None
    print(
        f"predicted category: {results.attrs.get('predicted_category')}; filters: {flt.describe()}; "
        f"{len(results)} results"
    )
    print(results.drop(columns=["attributes"]).to_string(index=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from vecflow.serve import serve

    serve(settings(), args.host, args.port, args.poll_seconds, args.access_log)
    return 0


def cmd_index_rollback(args: argparse.Namespace) -> int:
    from vecflow.index.window import rollback

    s = settings()
    print(f"{s.model_version}/{args.category}: now serving {rollback(s, _warehouse(s), args.category)}")
    return 0


def cmd_switch_model(args: argparse.Namespace) -> int:
    from vecflow.index.reindex import switch_model

    s = settings()
    pointer = switch_model(s, _warehouse(s), args.model_version, run_id="manual")
    print(f"serving model: {pointer['model_version']} (was {pointer['previous_model_version']})")
    return 0


def cmd_build_indexes(args: argparse.Namespace) -> int:
    """What an index-build pod runs: one build group's day and window indexes of a partition."""
    import json

    from vecflow.index.window import build_group_indexes
    from vecflow.warehouse import get_warehouse

    s = settings()
    built = build_group_indexes(s, get_warehouse(s), args.date, args.run_id, args.group)
    print(json.dumps(built, default=str))
    return 0


def cmd_catalog_import(args: argparse.Namespace) -> int:
    from vecflow.catalog import import_folder

    done = import_folder(settings(), args.folder, args.date, args.category_from_folder, args.source, args.attributes)
    print(f"catalog partition {done['partition']}: {done['images']} images listed in {done['manifest']}")
    if done["skipped"]:
        shown = ", ".join(done["skipped"][:5]) + (", ..." if len(done["skipped"]) > 5 else "")
        print(f"  {len(done['skipped'])} other files not listed (not images): {shown}")
    for warning in done["warnings"]:
        print(f"  warning: {warning}")
    return 0


def cmd_tags_train(args: argparse.Namespace) -> int:
    """Trains the `head` dimensions' heads on labels and the stored vectors; exit 1 when none could be."""
    from vecflow.heads import read_labels, tag_table, train_heads
    from vecflow.taxonomy import load_taxonomy

    s = settings()
    warehouse = _warehouse(s)
    labels = read_labels(s, warehouse, args.labels)
    head_set, report = train_heads(s, warehouse, labels, load_taxonomy(), args.model_version)
    print(f"labels {report['labels']}: {report['label_rows']} rows, {report['accepted']} accepted")
    for reason, count in sorted(report["reject_counts"].items()):
        print(f"  rejected {reason}: {count}")
    table = tag_table(report)
    if len(table):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for dimension, tags in report["not_labelled"].items():
        print(f"{dimension}: no labels for {', '.join(tags)} (never predicted)")
    for dimension, why in report["untrained"].items():
        print(f"no head for {dimension}: {why}")
    if head_set is None:
        raise CommandError(f"tags train: no head could be trained for model {report['model_version']}")
    published = int(table["published"].sum())
    print(f"head set {head_set.version} ({published} of {len(table)} tags published) written to {head_set.path}")
    print(f"rejected label rows: {head_set.path / 'rejects.csv'}")
    return 0


def cmd_tags_retag(args: argparse.Namespace) -> int:
    """Retags every stored clean image with the configured taxonomy and head set; exit 1 when the
    gate refuses the switch (image_tags is left as it was)."""
    from vecflow.tagging import retag, tag_versions

    s = settings()
    warehouse = _warehouse(s)
    run_id = f"retag__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%S}"
    done = retag(s, warehouse, run_id, args.model_version or s.model_version)
    print(
        f"retag {run_id}: {done['images']} images in {done['partitions']} partitions, {done['tag_rows']} tag rows "
        f"(taxonomy {done['taxonomy_version']}, heads {done['head_version'] or '-'}) in {done['seconds']} s"
    )
    for dimension, count in sorted(done["untagged"].items()):
        print(f"  untagged {dimension}: {count} images")
    if not done["switched"]:
        raise CommandError(
            f"tags retag: not switched: dimensions {', '.join(done['lost_dimensions'])} would lose every tag; "
            "image_tags unchanged"
        )
    print(f"image_tags switched; {done['unknown_tags']} unknown values rejected (rejects, stage tags)")
    for v in tag_versions(warehouse).itertuples():
        print(
            f"image_tags holds taxonomy {v.taxonomy_version} heads {v.head_version or '-'}: {v.partitions} partitions, {v.tag_rows} rows"
        )
    return 0


def parse_date(value: str) -> dt.date:
    """An argparse type: a YYYY-MM-DD date."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def cmd_migrate(args: argparse.Namespace) -> int:
    from vecflow.warehouse import get_warehouse, migrate, schema_version

    warehouse = get_warehouse(settings())
    done = migrate(warehouse, force=args.force)
    print(f"schema version {schema_version()}: " + ("applied" if done else "already applied, nothing to do"))
    return 0


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    import getpass

    # vecflow.alerts imports Airflow: only here, so that `run` can set Airflow's environment first
    from vecflow.alerts import NoOpenIncident, acknowledge
    from vecflow.warehouse import get_warehouse, migrate

    warehouse = get_warehouse(settings())
    migrate(warehouse)
    try:
        row = acknowledge(warehouse, args.key, dt.datetime.now(dt.UTC), args.by or getpass.getuser())
    except NoOpenIncident as exc:
        log.error("%s", exc)
        return 1
    print(row["message"] + "; reminders stop, the recovery will still be sent")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU build it tries
    parser = argparse.ArgumentParser(prog="python -m vecflow.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    finder = sub.add_parser("search", help="nearest catalog images of a picture, from the published indexes")
    finder.add_argument("--image", type=Path, required=True)
    finder.add_argument("--k", type=int, default=10)
    finder.add_argument("--category", help="a category, or 'all' (default: the predicted one)")
    finder.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only results with this tag (color=red, category=dress), source=... or attributes.<name>=...; "
        "repeatable (a key given twice matches either value)",
    )
    finder.add_argument("--listed-after", type=parse_date, help="only images listed on or after this date")
    finder.add_argument("--listed-before", type=parse_date, help="only images listed on or before this date")
    server_cmd = sub.add_parser("serve", help="the search service: HTTP search over the published indexes")
    server_cmd.add_argument("--host", default="127.0.0.1")
    server_cmd.add_argument("--port", type=int, default=8000)
    server_cmd.add_argument(
        "--poll-seconds", type=float, default=30.0, help="how often to look for new published versions"
    )
    server_cmd.add_argument("--access-log", action="store_true", help="log a line per request")
    back = sub.add_parser("index-rollback", help="serve the window index published before the current one")
    back.add_argument("--category", required=True)
    switch = sub.add_parser("switch-model", help="serve another model's indexes (the reindex switch gate applies)")
    switch.add_argument("--model-version", required=True)
    builder = sub.add_parser("build-indexes", help="build a partition's indexes of one build group (index pods run it)")
    builder.add_argument("--date", type=parse_date, required=True, help="the partition, YYYY-MM-DD")
    builder.add_argument("--run-id", required=True, help="the daily run it belongs to")
    builder.add_argument("--group", type=int, default=0, help="the build group (of VECFLOW_INDEX_BUILD_GROUPS)")
    catalog = sub.add_parser("catalog", help="bring your own catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    importer = catalog_sub.add_parser("import", help="write a catalog partition listing a folder's images")
    importer.add_argument("folder", type=Path, help="a directory tree of images (JPEG, PNG, WebP, ...)")
    importer.add_argument("--date", type=parse_date, required=True, help="the partition (listed_date), YYYY-MM-DD")
    importer.add_argument("--category-from-folder", action="store_true", help="each image's folder is its category")
    importer.add_argument("--source", default="import", help="the images' source (default: import)")
    importer.add_argument(
        "--attributes",
        type=Path,
        help="CSV or parquet: image_id (the path under the folder) and the catalog's other columns (brand, ...)",
    )
    tags = sub.add_parser("tags", help="tags of the taxonomy's dimensions")
    tags_sub = tags.add_subparsers(dest="tags_command", required=True)
    trainer = tags_sub.add_parser("train", help="train the `head` dimensions' heads on labels and the stored vectors")
    trainer.add_argument(
        "--labels", required=True, help="labels (image_id, dimension, tag): a CSV or parquet file, or a warehouse table"
    )
    trainer.add_argument(
        "--model-version", help="the model whose stored vectors to train on (default: the serving one)"
    )
    retagger = tags_sub.add_parser(
        "retag", help="retag every stored clean image with the configured taxonomy and head set (no re-embedding)"
    )
    retagger.add_argument("--model-version", help="the model whose stored vectors to retag (default: the serving one)")
    migrator = sub.add_parser("migrate", help="bring the warehouse to this code's schema version (once per version)")
    migrator.add_argument("--force", action="store_true", help="run the DDL even if the version is recorded")
    alerts = sub.add_parser("alerts", help="on-call: act on open alert incidents")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    ack = alerts_sub.add_parser("ack", help="acknowledge an open incident: stops its reminders")
    ack.add_argument("key", help="the incident's alert key, e.g. inflow:shop_b")
    ack.add_argument("--by", help="who takes it (default: the user running the command)")
    args = parser.parse_args(argv)
    from vecflow.catalog import CatalogError
    from vecflow.config import ConfigError
    from vecflow.heads import HeadError
    from vecflow.index.reindex import ModelSwitchError
    from vecflow.index.store import IndexIntegrityError
    from vecflow.index.window import IndexGateError
    from vecflow.tagging import TaggingError
    from vecflow_model.registry import ModelRegistryError

    try:
        settings().check()  # a malformed variable of any group stops the command before it starts
        commands = {
            "search": cmd_search,
            "serve": cmd_serve,
            "index-rollback": cmd_index_rollback,
            "switch-model": cmd_switch_model,
            "alerts": cmd_alerts_ack,
            "catalog": cmd_catalog_import,
            "migrate": cmd_migrate,
            "build-indexes": cmd_build_indexes,
            "tags": lambda a: {"train": cmd_tags_train, "retag": cmd_tags_retag}[a.tags_command](a),
        }
        return commands[args.command](args)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except (
        ModelSwitchError,
        CatalogError,
        IndexGateError,
        CommandError,
        HeadError,
        TaggingError,
    ) as exc:
        log.error("%s", exc)
        return 1
    except (IndexIntegrityError, ModelRegistryError) as exc:  # nothing to roll back, a damaged index, a model
        log.error("%s: %s", args.command, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
