"""The demo's commands (`python -m vecflow.demo`): generate-catalog, run, search-server. The product
command line (`python -m vecflow.cli`) does not import the demo package."""

from __future__ import annotations

import argparse
import logging
import sys

from vecflow.config import ConfigError, settings
from vecflow.demo import runner

log = logging.getLogger("vecflow.demo")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU build it tries
    parser = argparse.ArgumentParser(prog="python -m vecflow.demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runner.add_catalog_args(
        sub.add_parser("generate-catalog", help="generate the catalog and its truth under VECFLOW_HOME")
    )
    runner.add_catalog_args(
        sub.add_parser("run", help="generate the catalog if needed and run the pipeline through Airflow")
    )
    server = sub.add_parser("search-server", help="run the loopback Elasticsearch-compatible server")
    server.add_argument("--port", type=int, default=9200)
    args = parser.parse_args(argv)
    try:
        settings().check()  # a malformed variable of any group stops the command before it starts
        if args.command == "generate-catalog":
            runner.generate_catalog(args)
            return 0
        return {"run": runner.cmd_run, "search-server": runner.cmd_search_server}[args.command](args)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except runner.RunError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
