"""LLM serving: `llm-bench` (TTFT, TPOT, tokens/s, goodput and the highest rate within an SLO)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmatch import render
from benchmatch.sources import DEFAULT_RESULTS


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def cmd_llm_bench(a: argparse.Namespace) -> int:
    from benchmarks.llm.bench import LLMBench, LLMBenchError, run, store_rows
    from benchmarks.llm.harness import SLO
    from benchmarks.llm.workload import LengthDist, LLMWorkload
    from cluster.hardware import load_catalog
    from results.mapping import parse_set
    from results.store import ResultsStore

    catalog = load_catalog(a.catalog)
    if a.hardware not in catalog:
        raise LLMBenchError(f"--hardware {a.hardware!r} is not in the catalog ({', '.join(sorted(catalog))}); add "
                            "the machine your server runs on, with its price, to the catalog (--catalog)")
    try:
        workload = LLMWorkload(LengthDist(a.input_len, a.range_ratio), LengthDist(a.output_len, a.range_ratio),
                               a.num_requests, a.seed)
        slo = SLO(a.slo_ttft_ms, a.slo_tpot_ms)
        rates, fractions = _floats(a.rates), _floats(a.fractions)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise LLMBenchError(str(exc)) from exc
    bench = LLMBench(hardware=catalog[a.hardware], workload=workload, slo=slo, endpoint=a.endpoint, model=a.model,
                     asset=a.asset, config=parse_set(a.config), api=a.api, prompt_format=a.prompt_format,
                     max_num_seqs=a.max_num_seqs, rates=rates, fractions=tuple(fractions or ()) or (0.25, 0.5, 0.75, 1.0),
                     burstiness=a.burstiness, repeats=a.repeats, sweep_id=a.sweep, timeout_s=a.timeout,
                     metrics_port=a.metrics_port, metrics_linger_s=a.metrics_linger, loadgen=a.loadgen,
                     loadgen_min_duration_ms=a.loadgen_min_duration_ms, api_key_env=a.api_key_env,
                     log_dir=None if a.dry_run else str(Path(a.results) / "llm-loadgen-logs" / a.sweep))
    say = (lambda _m: None) if a.json else render.say
    measurements, rows = run(bench, say)
    paths = [] if a.dry_run else store_rows(ResultsStore(a.results), rows)
    summary: dict[str, Any] = {
        "hardware": a.hardware, "asset": rows[0][0]["asset"], "slo_ttft_ms": a.slo_ttft_ms, "slo_tpot_ms": a.slo_tpot_ms,
        "max_rate_within_slo_rps": [m.max_rate_within_slo for m in measurements],
        "curves": [m.curve() for m in measurements], "files": paths,
    }
    if a.json:
        print(json.dumps(summary, indent=2))
        return 0
    for i, m in enumerate(measurements):
        render.say(f"repeat {i + 1}: highest rate within the SLO: "
                   + (f"{m.max_rate_within_slo:.3g} requests/s" if m.max_rate_within_slo else "none of the measured rates"))
    render.say(f"{sum(len(r) for r in rows)} rows " + ("(dry run: not stored)" if a.dry_run else f"stored in {a.results}"))
    return 0


def register(sub: Any, parents: list[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """Add `llm-bench` to the `benchmatch` subparsers."""
    p = sub.add_parser(
        "llm-bench", help="measure an LLM server (OpenAI-compatible, streaming) or a generative asset: TTFT, TPOT, "
                          "tokens/s, goodput and the highest request rate within a TTFT/TPOT SLO",
        description="Send generated prompts all at once, then as Poisson arrivals at fractions of that rate (or "
                    "at --rates), to any OpenAI-compatible streaming endpoint (vLLM, TGI, SGLang, Ray Serve LLM) "
                    "or to a generative asset run in-process; store an Offline and a Server row per repeat.",
        parents=parents, formatter_class=fmt)
    src = p.add_argument_group("system under test (one of)")
    src.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    src.add_argument("--api-key-env", metavar="VAR", help="send the API key held in this environment variable "
                                                          "(never stored or printed; over http only to loopback)")
    src.add_argument("--model", help="the model id the endpoint serves")
    src.add_argument("--asset", help="a generative asset to run in-process, e.g. gpt2")
    p.add_argument("--hardware", required=True, help="catalog name of the machine the model runs on (its price and "
                                                     "accelerator go into the rows)")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="asset configuration (layers=2, threads=1, ...) or what you want recorded of your server "
                        "(engine=vllm, tp=2, dtype=bf16); repeatable")
    p.add_argument("--api", choices=("completions", "chat"), default="completions", help="endpoint API")
    p.add_argument("--prompt-format", choices=("tokens", "text"), default="tokens",
                   help="send prompts as token ids (exact input lengths) or as text")
    p.add_argument("--input-len", type=int, default=128, help="mean prompt tokens")
    p.add_argument("--output-len", type=int, default=32, help="mean output tokens")
    p.add_argument("--range-ratio", type=float, default=0.0, help="lengths uniform in mean x [1-r, 1+r]")
    p.add_argument("--num-requests", type=int, default=32, help="requests per run (each rate and the all-at-once run)")
    p.add_argument("--rates", help="offered rates in requests/s, comma-separated (default: fractions of the "
                                   "all-at-once completion rate)")
    p.add_argument("--fractions", help="fractions of the all-at-once rate to offer (default 0.25,0.5,0.75,1)")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of inter-arrival times (1: Poisson)")
    p.add_argument("--slo-ttft-ms", type=float, help="TTFT bound for goodput and the rate search")
    p.add_argument("--slo-tpot-ms", type=float, help="TPOT bound for goodput and the rate search")
    p.add_argument("--max-num-seqs", type=int, default=4, help="in-process asset: requests in flight at once")
    p.add_argument("--repeats", type=int, default=1, help="curves to measure (the spread across them is reported)")
    p.add_argument("--seed", type=int, default=0, help="seed of lengths, prompts and arrivals (repeat r uses seed+r)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results store to write to")
    p.add_argument("--sweep", default="llm-bench", help="sweep id of the rows")
    p.add_argument("--metrics-port", type=int, help="serve live TTFT / TPOT / tokens metrics for Prometheus on "
                                                     "127.0.0.1:PORT while measuring (dashboard benchmatch-llm)")
    p.add_argument("--metrics-linger", type=float, default=0.0,
                   help="seconds to keep serving the live metrics after the last run, for a last scrape")
    p.add_argument("--loadgen", action="store_true",
                   help="in-process asset: let MLPerf LoadGen issue the requests in its token-latency mode (its "
                        "TTFT/TPOT verdict and logs go into the rows beside benchmatch's own timings)")
    p.add_argument("--loadgen-min-duration-ms", type=int, default=2000, help="LoadGen's minimum duration per Server run")
    p.add_argument("--dry-run", action="store_true", help="measure and print; store nothing")
    p.add_argument("--json", action="store_true", help="print the curves and the rates within the SLO as JSON")
    p.set_defaults(fn=cmd_llm_bench)
