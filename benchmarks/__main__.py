"""`python -m benchmarks sweep CONFIG` — the entry point for `ray job submit` and RayJob.

Inside `ray job submit` Ray sets RAY_ADDRESS, so the sweep runs on that cluster; run by hand it
uses `benchmatch cluster up`'s cluster or starts an embedded one. `run-local` runs the measurement
core without Ray (a GPU box with only torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep", help="run a sweep file on Ray Tune")
    s.add_argument("config")
    s.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, `cluster up`, else embedded)")
    s.add_argument("--resume", action="store_true", help="run only the trials missing from the store")
    s.add_argument("--results", help="results URI (overrides the sweep file's results_uri)")
    s.add_argument("--catalog", help="hardware catalog YAML (default configs/hardware.yaml)")
    s.add_argument("--json", action="store_true", help="print the sweep report as JSON")
    r = sub.add_parser("run-local", help="run a sweep's trials on this machine without Ray")
    r.add_argument("config")
    r.add_argument("--hardware", default="probe", help="catalog name to record, or 'probe' (default)")
    r.add_argument("--results", help="results URI (overrides the sweep file's results_uri)")
    r.add_argument("--catalog")
    a = p.parse_args(argv)

    from benchmarks.spec import SpecError, load_sweep
    from benchmarks.store import ResultsStore
    from cluster.hardware import CatalogError, load_catalog

    try:
        if a.cmd == "run-local":
            from benchmarks.local_runner import run_sweep_locally
            from cluster.probe import probe_local

            spec = load_sweep(a.config)
            if a.results:  # LoadGen logs and checkpoints go beside the rows, not to the file's folder
                spec = spec.model_copy(update={"results_uri": a.results})
            hw = probe_local() if a.hardware == "probe" else load_catalog(a.catalog)[a.hardware]
            store = ResultsStore(spec.results_uri)
            n = run_sweep_locally(spec, hw, store)
            print(f"{n} trial repeats written to {store.uri}")
            return 0
        from benchmarks.sweep import SweepError, prepare, run_sweep
        from cluster.local import connect

        # Under `ray job submit` the driver's working directory is Ray's unpacked package, which
        # Ray deletes and re-extracts while this driver registers (seen with Ray 2.60): read every
        # file first, make paths absolute, and leave that directory before connecting.
        in_job_package = "working_dir_files" in os.getcwd()
        results = a.results
        if in_job_package and not (results and ("://" in results or os.path.isabs(results))):
            raise SpecError("under `ray job submit`, give --results an absolute path or a s3:// / gs:// URI: "
                            "a relative path would land in Ray's temporary copy of the working dir and be lost")
        spec, catalog = prepare(a.config, catalog_path=a.catalog, results_uri=results)
        if in_job_package:
            os.chdir(os.path.expanduser("~"))
        owned = connect(a.address, a.catalog)
        try:
            report = run_sweep(spec, catalog, resume=a.resume)
        finally:
            if owned:
                owned.shutdown()
        if a.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(f"sweep {report.sweep_id}: {report.ran} trial repeats run, {report.already_done} already done, "
                  f"{report.failed} failed, {report.wall_s:.1f} s; results in {report.results_uri}")
        return 0 if not report.trial_failures else 1
    except (SpecError, CatalogError, SweepError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
