"""Where a configuration can run: which hardware each engine, precision or device option runs on.

A performance model predicts a number for any (hardware, configuration) it is asked about, TensorRT
on a Raspberry Pi included; a number for a pair that cannot exist must never answer. Numeric
options (batch size, threads) are governed by the measured range (models.abstentions); this module
governs the categorical ones (text or yes/no values: engine, precision, device, ...).

A value v of option k is supported on hardware h when
  1. the catalog declares it: h lists k under `supports` and v is in the list (a declared list is
     the whole truth for h: a value it leaves out is unsupported even if a row says otherwise);
  2. else the data shows it: v was measured on h for this asset;
  3. else, for hardware this asset was never measured on, v was measured on hardware of the same
     accelerator type (a new CPU instance runs what the measured CPUs ran; a new GPU type needs
     `supports` in the catalog, since engines differ between accelerator generations).
A prediction for an unsupported pair is dropped before it can answer or be suggested, and the
answer's notes say which pairs were dropped and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from matcher.candidates import CFG, clean_value, config_columns


def categorical_options(rows: pd.DataFrame) -> list[str]:
    """The cfg_ columns whose values are text or yes/no (numbers are ranges, not support)."""
    out = []
    for col in config_columns(rows):
        values = [clean_value(v) for v in rows[col].tolist()]
        if any(isinstance(v, str | bool) for v in values if v is not None):
            out.append(col)
    return out


def _accelerator(catalog: Mapping[str, Any], hw: str) -> str | None:
    spec = catalog.get(hw)
    return str(spec.accelerator_type).lower() if spec is not None else None


def _verdicts(predicted: pd.DataFrame, measured_rows: pd.DataFrame,
              catalog: Mapping[str, Any]) -> list[tuple[str, str] | None]:
    """Per predicted row: None when it can run, else (option=value, what allows that value where)."""
    options = [c for c in categorical_options(pd.concat([measured_rows, predicted], ignore_index=True, sort=False))
               if c in predicted.columns]
    if not options or predicted.empty:
        return [None] * len(predicted)
    seen_on: dict[tuple[str, Any], set[str]] = {}
    for col in options:
        if col not in measured_rows.columns:
            continue
        for hw, v in zip(measured_rows["hardware"].astype(str), measured_rows[col].tolist(), strict=True):
            seen_on.setdefault((col, clean_value(v)), set()).add(hw)
    measured_hw = set(measured_rows["hardware"].astype(str)) if "hardware" in measured_rows.columns else set()
    out: list[tuple[str, str] | None] = []
    for row in predicted.to_dict("records"):
        hw = str(row["hardware"])
        declared = dict(getattr(catalog.get(hw), "supports", None) or {})
        verdict = None
        for col in options:
            v = clean_value(row.get(col))
            if v is None:
                continue
            name = col[len(CFG):]
            if name in declared:
                if v not in declared[name]:
                    verdict = (f"{name}={v}", f"the catalog lists what each runs ({name}: "
                                              f"{', '.join(map(str, declared[name]))})")
                    break
                continue
            where = seen_on.get((col, v), set())
            if hw in where:
                continue
            kind = _accelerator(catalog, hw)
            if hw not in measured_hw and kind is not None and any(_accelerator(catalog, h) == kind for h in where):
                continue
            verdict = (f"{name}={v}", f"measured only on {', '.join(sorted(where)) or 'no hardware'}; declare it "
                                      "under `supports` in a catalog entry that runs it")
            break
        out.append(verdict)
    return out


def unsupported(predicted: pd.DataFrame, measured_rows: pd.DataFrame, catalog: Mapping[str, Any]) -> list[str | None]:
    """Why each predicted row's configuration cannot run on its hardware (None: it can), by the
    rules of the module docstring; `measured_rows` are the asset's measured rows (or candidates)."""
    return [None if v is None else f"{v[0]} does not run on {hw}: {v[1]}"
            for v, hw in zip(_verdicts(predicted, measured_rows, catalog), predicted["hardware"].astype(str),
                             strict=True)]


def drop_unsupported(predicted: pd.DataFrame, measured_rows: pd.DataFrame,
                     catalog: Mapping[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """The predicted rows whose configuration can run on their hardware, and one note per option
    value for the others ('not predicted: engine=tensorrt on pi, coral (measured only on ...)')."""
    if predicted is None or predicted.empty:
        return predicted, []
    verdicts = _verdicts(predicted, measured_rows, catalog)
    grouped: dict[tuple[str, str], set[str]] = {}
    for v, hw in zip(verdicts, predicted["hardware"].astype(str), strict=True):
        if v is not None:
            grouped.setdefault(v, set()).add(hw)
    notes = [f"not predicted, the configuration does not run there: {value} on {', '.join(sorted(hws))} ({why})"
             for (value, why), hws in sorted(grouped.items())]
    keep = [v is None for v in verdicts]
    return predicted[keep].reset_index(drop=True), notes
