"""`python -m benchmarks sweep CONFIG` — the entry point for `ray job submit` and RayJob.

Inside `ray job submit` Ray sets RAY_ADDRESS to the cluster the job was submitted to, so the sweep
runs there; run by hand it uses `benchmatch cluster up`'s cluster or starts an embedded one.
`run-local` runs the measurement core without Ray (a GPU box with only torch).
"""

from __future__ import annotations

import argparse
import sys


def _run_local(a: argparse.Namespace) -> int:
    from benchmarks.local_runner import run_sweep_locally
    from benchmarks.spec import load_sweep
    from cluster.hardware import load_catalog
    from cluster.probe import probe_local
    from results.store import ResultsStore

    spec = load_sweep(a.config)
    if a.results:  # LoadGen logs and checkpoints go beside the rows, not to the file's folder
        spec = spec.model_copy(update={"results_uri": a.results})
    if a.hardware == "probe":
        hw = probe_local()
    else:
        catalog = load_catalog(a.catalog)
        if a.hardware not in catalog:
            from cluster.hardware import CatalogError

            raise CatalogError(f"--hardware {a.hardware!r} is not in the catalog; known: {sorted(catalog)}")
        hw = catalog[a.hardware]
    store = ResultsStore(spec.results_uri)
    n = run_sweep_locally(spec, hw, store)
    print(f"{n} trial repeats written to {store.uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from benchmarks.sweep import add_sweep_args, sweep_command
    from cluster.errors import BenchmatchError

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=fmt)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    s = sub.add_parser("sweep", help="run a sweep file on Ray Tune", description="Run a sweep file on Ray Tune.",
                       formatter_class=fmt)
    add_sweep_args(s)
    s.add_argument("--catalog", help="hardware catalog YAML (default: configs/hardware.yaml)")
    r = sub.add_parser("run-local", help="run a sweep's trials on this machine without Ray",
                       description="Run every trial of a sweep on this machine, without Ray (e.g. a GPU box "
                                   "with only torch).", formatter_class=fmt)
    r.add_argument("config", help="sweep file (YAML)")
    r.add_argument("--hardware", default="probe", help="catalog name to record the rows as, or 'probe' to "
                                                        "describe this machine")
    r.add_argument("--results", help="results URI (default: the sweep file's results_uri)")
    r.add_argument("--catalog", help="hardware catalog YAML (default: configs/hardware.yaml)")
    a = p.parse_args(argv)
    try:
        return _run_local(a) if a.cmd == "run-local" else sweep_command(a)
    except BenchmatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
