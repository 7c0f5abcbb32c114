"""LLM serving in the matcher: request-rate and tokens/s demands, and dollars per million tokens.

A replica of an LLM asset serves requests; its capacity at the request's TTFT / TPOT bounds is
read off its rate curve in requests/s (capacity.py), and its tokens/s capacity is that times the
output tokens of the requests it was measured with. A tokens/s demand is met in tokens: the
solver sees each replica's tokens/s as its throughput and the demand in tokens/s, so the MILP,
the enumeration and the diagnosis stay one model with one demand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from matcher.candidates import TOKENS_PER_REQUEST
from matcher.errors import RequirementsError
from matcher.metrics import numeric
from matcher.requirements import Requirements

LLM_DEMANDS = ("requests_per_s", "output_tokens_per_s")


def with_token_capacity(cands: pd.DataFrame) -> pd.DataFrame:
    """output_tokens_per_s (and its point) as the sized request capacity times the output tokens
    per request, where both are known (Offline's figure stays where they are not)."""
    if TOKENS_PER_REQUEST not in cands.columns:
        return cands
    out = cands.copy()
    per = numeric(out, TOKENS_PER_REQUEST)
    for suffix in ("", "_point"):
        req = numeric(out, f"throughput_qps{suffix}") if f"throughput_qps{suffix}" in out.columns else numeric(out, "throughput_qps")
        tok = req * per
        have = ~np.isnan(tok)
        if have.any():
            old = numeric(out, f"output_tokens_per_s{suffix}")
            out[f"output_tokens_per_s{suffix}"] = np.where(have, tok, old)
    return out


def check_units(req: Requirements, cands: pd.DataFrame, field: str = "constraints") -> None:
    """A request-rate or tokens/s demand needs LLM serving rows (a sample that is a request)."""
    name = req.constraints.demand_field
    if name not in LLM_DEMANDS:
        return
    units = set(cands["sample_unit"].fillna("").astype(str)) if "sample_unit" in cands.columns else set()
    units.discard("")  # predicted rows say nothing of their unit; the measured ones do
    if units != {"request"}:
        raise RequirementsError(
            f"{field}.{name}: the candidates of this asset are not LLM serving measurements (their sample is "
            f"{'a ' + ', '.join(sorted(u or 'sample' for u in units)) if units else 'a sample'}, not a request); bound "
            "throughput_qps instead, or measure the model with `benchmatch llm-bench`",
            [(f"{field}.{name}", "needs rows whose sample is a request (llm-bench or an LLM import)")])


def solver_view(req: Requirements, cands: pd.DataFrame) -> tuple[Requirements, pd.DataFrame]:
    """The request and candidates as the solver sees them: one demand, `throughput_qps`, in the
    unit the request stated (requests/s, or tokens/s with each replica's tokens/s capacity)."""
    c = req.constraints
    if c.output_tokens_per_s is not None:
        view = cands.copy()
        for suffix in ("", "_point", "_iqr"):
            if f"output_tokens_per_s{suffix}" in view.columns:
                view[f"throughput_qps{suffix}"] = view[f"output_tokens_per_s{suffix}"]
        constraints = c.model_copy(update={"throughput_qps": c.output_tokens_per_s, "output_tokens_per_s": None})
        return req.model_copy(update={"constraints": constraints}), view
    if c.requests_per_s is not None:
        constraints = c.model_copy(update={"throughput_qps": c.requests_per_s, "requests_per_s": None})
        return req.model_copy(update={"constraints": constraints}), cands
    return req, cands


def usd_per_million_tokens(cost_per_hour_usd: float, tokens_per_s: float | None) -> float | None:
    """What a million output tokens cost on a deployment run at its capacity (a floor: at a lower
    load the same hours make fewer tokens)."""
    if tokens_per_s is None or not math.isfinite(tokens_per_s) or tokens_per_s <= 0:
        return None
    return cost_per_hour_usd / (tokens_per_s * 3600.0) * 1e6
