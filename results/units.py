"""Units and scales a mapping may state for a source column, as factors to the result row's units.

A result-row column has one unit (results/schema.py: `ms`, `samples/s`, `J`, `W`, `MiB`, `count`,
`FLOP`, ...). A source states its own (`us`, `tokens/s`, `mJ/token`, `GFLOP`, counts in millions),
and `conversion` turns it into one factor, refusing a unit it does not know by name so that a value
is never stored 10^9 too small in silence. Rates and per-sample energies also say what they count
(`token`, `request`); a row keeps that in `sample_unit` so tokens/s are never mixed with images/s.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Factors to each dimension's base unit. Names are matched lower-cased, after dropping a plural 's'
# where the singular is listed too.
_TIME = {"ns": 1e-6, "nanosecond": 1e-6, "us": 1e-3, "\u00b5s": 1e-3, "\u03bcs": 1e-3, "usec": 1e-3,
         "microsecond": 1e-3, "ms": 1.0, "msec": 1.0, "millisecond": 1.0, "s": 1e3, "sec": 1e3,
         "second": 1e3, "min": 6e4, "minute": 6e4, "h": 3.6e6, "hr": 3.6e6, "hour": 3.6e6}  # base: ms
_PER_TIME = {"s": 1.0, "sec": 1.0, "second": 1.0, "ms": 1e3, "min": 1 / 60, "minute": 1 / 60,
             "h": 1 / 3600, "hr": 1 / 3600, "hour": 1 / 3600}  # "per <time>" -> per second
_FRACTION = {"fraction": 1.0, "ratio": 1.0, "1": 1.0, "percent": 0.01, "%": 0.01, "pct": 0.01}
_ENERGY = {"j": 1.0, "joule": 1.0, "mj": 1e-3, "millijoule": 1e-3, "uj": 1e-6, "\u00b5j": 1e-6,
           "microjoule": 1e-6, "kj": 1e3, "kilojoule": 1e3, "wh": 3600.0, "kwh": 3.6e6}  # base: J
_POWER = {"w": 1.0, "watt": 1.0, "mw": 1e-3, "milliwatt": 1e-3, "kw": 1e3, "kilowatt": 1e3}  # base: W
_MEMORY = {"b": 2.0**-20, "byte": 2.0**-20, "kb": 1e3 / 2**20, "mb": 1e6 / 2**20, "gb": 1e9 / 2**20,
           "tb": 1e12 / 2**20, "kib": 2.0**-10, "mib": 1.0, "gib": 1024.0, "tib": 2.0**20}  # base: MiB
_COUNT = {"1": 1.0, "count": 1.0, "unit": 1.0, "k": 1e3, "thousand": 1e3, "m": 1e6, "mio": 1e6,
          "million": 1e6, "g": 1e9, "b": 1e9, "bn": 1e9, "billion": 1e9, "t": 1e12, "trillion": 1e12}
_FLOP = {"flop": 1.0, "kflop": 1e3, "mflop": 1e6, "gflop": 1e9, "tflop": 1e12, "pflop": 1e15}  # base: FLOP
# What a rate or a per-sample figure may count, and what a result row calls it. A query of MLPerf's
# Server and Offline scenarios is one sample; an image, a sequence or a frame is a sample too.
_ITEMS = {"sample": "sample", "query": "sample", "queries": "sample", "q": "sample", "image": "sample",
          "img": "sample", "item": "sample", "sequence": "sample", "seq": "sample", "frame": "sample",
          "inference": "sample", "prediction": "sample", "token": "token", "tok": "token",
          "request": "request", "req": "request"}
_RATE_WORDS = {"qps": ("sample", 1.0), "fps": ("sample", 1.0), "ips": ("sample", 1.0), "rps": ("request", 1.0),
               "samples_per_s": ("sample", 1.0), "queries_per_s": ("sample", 1.0),
               "tokens_per_s": ("token", 1.0), "requests_per_s": ("request", 1.0)}
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6}  # ktokens/s; "m" is mega here (millitokens do not exist)

DIMENSIONS: dict[str, dict[str, float]] = {
    "time": _TIME, "fraction": _FRACTION, "energy": _ENERGY, "power": _POWER, "memory": _MEMORY,
    "count": _COUNT, "flop": _FLOP,
}
# A result-row column's unit (results/schema.py) -> (dimension, factor from the base unit to it).
TARGET_UNITS: dict[str, tuple[str, float]] = {
    "ms": ("time", 1.0), "s": ("time", 1e-3), "samples/s": ("rate", 1.0), "queries/s": ("rate", 1.0),
    "fraction": ("fraction", 1.0), "J": ("energy", 1.0), "J/sample": ("energy_per", 1.0), "W": ("power", 1.0),
    "MiB": ("memory", 1.0), "count": ("count", 1.0), "samples": ("count", 1.0), "FLOP": ("flop", 1.0),
}
_EXAMPLES = {
    "rate": "samples/s, queries/s, qps, tokens/s, requests/s, images/s, ktokens/s, samples/min",
    "energy_per": "J/sample, mJ/sample, J/token, mJ/token, J/request, J/query (or J, mJ: per query)",
}
SCALE_WORDS = {"k": 1e3, "thousand": 1e3, "thousands": 1e3, "m": 1e6, "million": 1e6, "millions": 1e6,
               "g": 1e9, "b": 1e9, "billion": 1e9, "billions": 1e9, "t": 1e12, "trillion": 1e12}


class UnitError(ValueError):
    """A unit or scale that cannot be read; the message names it and lists what is known."""


@dataclass(frozen=True)
class Conversion:
    factor: float  # multiply the source value by this
    item: str | None = None  # "token" / "request": what one "sample" of the row is; None: a sample


def _norm(word: str) -> str:
    return re.sub(r"\s+", " ", word.strip().lower())


def _lookup(word: str, table: dict[str, float]) -> float | None:
    w = _norm(word)
    if w in table:
        return table[w]
    if w.endswith("s") and w[:-1] in table and len(w) > 2:
        return table[w[:-1]]
    return None


def _item(word: str) -> str | None:
    w = _norm(word)
    for cand in (w, w[:-1] if w.endswith("s") else None, w[:-2] if w.endswith("es") else None):
        if cand and cand in _ITEMS:
            return _ITEMS[cand]
    return None


def _rate(unit: str) -> Conversion | None:
    w = _norm(unit)
    if w in _RATE_WORDS:
        item, f = _RATE_WORDS[w]
        return Conversion(f, None if item == "sample" else item)
    m = re.fullmatch(r"(k|m)?\s*([a-z]+?)\s*(?:/|_per_|\s+per\s+)\s*([a-z]+)", w)
    if m is None:
        return None
    prefix, what, per = m.groups()
    item = _item(what)
    if item is None and prefix:  # "msamples/s" is mega-samples, "ms/s" is not a rate
        item, prefix = _item((prefix or "") + what), None
    per_s = _lookup(per, _PER_TIME)
    if item is None or per_s is None:
        return None
    return Conversion(_PREFIX[prefix or ""] * per_s, None if item == "sample" else item)


def _energy_per(unit: str) -> Conversion | None:
    w = _norm(unit)
    m = re.fullmatch(r"([a-z\u00b5]+)\s*(?:/|_per_|\s+per\s+)\s*([a-z]+)", w)
    if m is None:
        f = _lookup(w, _ENERGY)  # an energy per query, as MLPerf's SingleStream millijoules
        return None if f is None else Conversion(f)
    energy, what = m.groups()
    f, item = _lookup(energy, _ENERGY), _item(what)
    if f is None or item is None:
        return None
    return Conversion(f, None if item == "sample" else item)


def known_units(dimension: str) -> str:
    """The units of a dimension, for messages."""
    if dimension in _EXAMPLES:
        return _EXAMPLES[dimension]
    return ", ".join(sorted(DIMENSIONS[dimension]))


def parse_scale(scale: float | int | str | None, where: str) -> float:
    """A number (1e6), or a word (k, M, million, G, billion); 1 without one."""
    if scale is None:
        return 1.0
    if isinstance(scale, bool):
        raise UnitError(f"{where}: scale {scale!r} is not a number or a multiplier word")
    if isinstance(scale, int | float):
        value = float(scale)
    else:
        text = str(scale).strip()
        word = SCALE_WORDS.get(text.lower())
        if word is not None:
            value = word
        else:
            try:
                value = float(text)
            except ValueError:
                raise UnitError(f"{where}: scale {scale!r} is not a number or one of "
                                f"{', '.join(sorted(SCALE_WORDS))}") from None
    if not math.isfinite(value) or value <= 0:
        raise UnitError(f"{where}: scale {scale!r} must be a positive finite number")
    return value


def conversion(unit: str | None, target_unit: str | None, *, target: str, where: str) -> Conversion:
    """The factor that turns a value in `unit` into a value in `target_unit` (the column's unit in
    results/schema.py; "quality" for a quality_ column, which converts fractions only). Raises
    UnitError naming the unit and the known ones."""
    if unit is None or not str(unit).strip():
        return Conversion(1.0)
    if target_unit == "quality":
        f = _lookup(str(unit), _FRACTION)
        if f is None:
            raise UnitError(f"{where}: unit {unit!r} cannot convert '{target}' (a quality score converts only "
                            f"fractions: {known_units('fraction')}; use `scale` for other factors)")
        return Conversion(f)
    dim = TARGET_UNITS.get(target_unit or "")
    if dim is None:
        raise UnitError(f"{where}: unit {unit!r} given for '{target}', which takes no unit conversion"
                        + (f" (its unit is {target_unit})" if target_unit else ""))
    dimension, to_target = dim
    if dimension == "rate":
        conv = _rate(str(unit))
    elif dimension == "energy_per":
        conv = _energy_per(str(unit))
    else:
        f = _lookup(str(unit), DIMENSIONS[dimension])
        conv = None if f is None else Conversion(f)
    if conv is None:
        raise UnitError(f"{where}: unknown unit {unit!r} for '{target}' ({target_unit}); "
                        f"known {dimension.replace('_', ' per ')} units: {known_units(dimension)}")
    return Conversion(conv.factor * to_target, conv.item)


# Words in a source column's name that say its unit, by dimension: a column named `p99_us` or
# `GFLOPs` mapped without a unit would be read in the target's unit, wrongly.
_HINTS: dict[str, dict[str, str]] = {
    "time": {"us": "us", "usec": "us", "\u00b5s": "us", "ns": "ns", "sec": "s", "secs": "s", "seconds": "s",
             "s": "s", "min": "min", "minutes": "min"},
    "flop": {"kflop": "kFLOP", "kflops": "kFLOP", "mflop": "MFLOP", "mflops": "MFLOP", "gflop": "GFLOP",
             "gflops": "GFLOP", "tflop": "TFLOP", "tflops": "TFLOP"},
    "fraction": {"pct": "percent", "percent": "percent", "%": "percent"},
    "energy": {"mj": "mJ", "kj": "kJ", "wh": "Wh", "kwh": "kWh"},
    "power": {"mw": "mW", "kw": "kW"},
    "memory": {"gib": "GiB", "gb": "GB", "kb": "KB", "kib": "KiB", "bytes": "bytes", "mb": "MB"},
    "count": {"m": "M", "million": "M", "millions": "M", "k": "k", "thousand": "k", "b": "billion",
              "billion": "billion", "billions": "billion"},
    "rate": {"tokens": "tokens/s", "tok": "tokens/s", "requests": "requests/s", "req": "requests/s"},
}


def hinted_unit(column: str, target_unit: str | None) -> str | None:
    """The unit a source column's name suggests when it differs from the target's, else None."""
    dim = TARGET_UNITS.get(target_unit or "")
    if dim is None or dim[0] not in _HINTS:
        return None
    words = [w for w in re.split(r"[^0-9a-z%\u00b5]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", column).lower()) if w]
    hints = _HINTS[dim[0]]
    if dim[0] == "time" and target_unit == "s":
        hints = {k: v for k, v in hints.items() if v != "s"} | {"ms": "ms", "msec": "ms"}
    for w in words:
        if w in hints:
            return hints[w]
    return None
