"""Learn: `train` (performance models from the results) and `import` (results of other tools)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmatch import render
from benchmatch.sources import DEFAULT_RESULTS, default_models_dir


def cmd_train(a: argparse.Namespace) -> int:
    from cluster.hardware import load_catalog
    from matcher.errors import NoDataError
    from matcher.models import train_models
    from results.store import ResultsStore

    df = ResultsStore(a.results).read()
    if df.empty:
        raise NoDataError(f"no results in {a.results}: run `benchmatch sweep CONFIG` (or quickstart) first")
    models = train_models(df, load_catalog(a.catalog))
    out = a.models or default_models_dir(a.results)
    models.save(out)
    rows = models.summary()
    if a.json:
        print(json.dumps({"models_dir": out, "models": rows}, indent=2, default=str))
        return 0
    render.print_model_summary(rows)
    render.say(f"models saved to {out} (skops format)")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    """Exit 0 when every record of the file is in the store, 1 when some were rejected or skipped as
    contradicting stored rows (the good ones are written all the same)."""
    from results.importer import import_file
    from results.mapping import parse_set

    report = import_file(a.file, a.mapping, results_uri=a.results, catalog_path=a.catalog,
                         sweep_id=a.sweep, dry_run=a.dry_run, replace=getattr(a, "replace", False),
                         constants=parse_set(getattr(a, "set", None)))
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render.print_import(report)
    return 0 if report.ok else 1


def register(sub: Any, parents: list[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """Add `train` and `import` to the `benchmatch` subparsers."""
    t = sub.add_parser("train", help="fit performance models on the results and print their CV error",
                       description="Fit the performance models (one per asset and metric) on the results store, "
                                   "print their cross-validated error and save them in skops format.",
                       parents=parents, formatter_class=fmt)
    t.add_argument("--results", default=DEFAULT_RESULTS, help="results store to learn from")
    t.add_argument("--models", help="where to save the models (default: RESULTS/models)")
    t.add_argument("--json", action="store_true", help="print the model summary as JSON")
    t.set_defaults(fn=cmd_train)

    i = sub.add_parser("import", help="import results of other tools (MLPerf summary, CSV, JSON, Parquet) "
                                      "through a column mapping",
                       description="Import another tool's results into the results store through a column "
                                   "mapping; rejected rows are named by their line and column, the good ones are "
                                   "written as one file. Rows already stored are never deleted: new rows are added, "
                                   "rows that fill missing values are merged, contradicting rows are reported "
                                   "(--replace takes the file's values).",
                       parents=parents, formatter_class=fmt)
    i.add_argument("file", help="CSV (.csv/.tsv), JSON (.json/.jsonl) or Parquet file")
    i.add_argument("--mapping", required=True, help="column mapping YAML (see configs/mappings/)")
    i.add_argument("--results", default=DEFAULT_RESULTS, help="results store to write to")
    i.add_argument("--sweep", help="sweep id of the imported rows (default: import-<file stem>)")
    i.add_argument("--set", action="append", metavar="TARGET=VALUE",
                   help="a constant for every row, e.g. --set hardware=jetson-nano (repeatable; a result-row "
                        "column or cfg_<name>)")
    i.add_argument("--replace", action="store_true",
                   help="where a row contradicts a stored row of the sweep, take the file's values (default: keep "
                        "the stored row and report it)")
    i.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
    i.add_argument("--json", action="store_true", help="print the import report as JSON")
    i.set_defaults(fn=cmd_import)
