"""Per-field drift tests on the raw event fields, with multiple-testing correction, and drift injection.

An embedding test (:mod:`obsad.monitor.drift`) says *whether* the events moved; these tests say *which raw fields*
moved and *by how much*, in the field's own units:

- **numeric** fields: the two-sample Kolmogorov-Smirnov test on the values present (coerced to numbers; the
  original scale, not the encoder's standardised one), ``shift`` = the Wasserstein-1 distance between the two
  samples of present values, in the field's units. When either side has missing values, the missing rates are
  compared too (2 x 2 chi-square) and the field's p-value is the smaller of the two times 2 (Bonferroni within the
  field), so a field going missing is found even when the values left are unchanged.
- **categorical** fields (every other encoded role: codes, names, addresses, text): the chi-square test of
  homogeneity on the value counts of both samples, in bins chosen from the *pooled* counts (a value gets a bin of
  its own when its expected count is at least ``min_expected`` on both sides, at most ``max_categories`` of them;
  the rest share ``<other>``, missing values ``<missing>``). Binning on the pooled sample treats both sides alike,
  so the test keeps its level under no drift (a bin of "values unseen in the reference" would not: in a
  high-cardinality field rare values are always unseen somewhere); a new value frequent enough gets its own bin,
  where the reference count is 0. ``shift`` = the total variation distance between the binned distributions
  (the share of events that would have to change value). ``detail`` names the value whose share moved most and
  the share of current events with a value never seen in the reference.
- **timestamp** fields: the times themselves always move between a reference and a later window, so what is
  compared is *when in the day and week* events happen: the same chi-square test on the hour of the day and on the
  day of the week (UTC), p-value the smaller of the two times 2, ``shift`` the larger total variation distance.
  Embeddings encode both, so a window of one night against a reference of whole weeks shows here.

Every row has ``field`` (the raw column), ``kind``, ``p_value``, ``p_value_adjusted`` (Benjamini-Hochberg by
default, or Bonferroni, over the fields tested), ``shift``, ``effect`` (a unitless size in [0, 1]: the KS
statistic or the total variation distance, the larger of it and the change of missing rate; used to order fields
with equal p-values), ``missing_reference``, ``missing_current`` and ``detail``. Fields come most significant
first.

:func:`inject_drift` makes the kinds of drift the tests should find (a numeric field shifted by a number of
standard deviations, a new categorical value in a share of the events, a field going missing, a new service), on
a copy of a raw event frame, for power measurements.

The loops run over fields (tens), never over rows: every test is a handful of numpy / pandas / scipy calls.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["FIELD_COLUMNS", "adjust_p_values", "field_kinds_from_encoder", "field_tests", "infer_field_kinds",
           "inject_drift"]

#: The columns of :func:`field_tests`' table, in order.
FIELD_COLUMNS = ["field", "kind", "p_value", "p_value_adjusted", "shift", "effect", "missing_reference",
                 "missing_current", "detail"]
CORRECTIONS = ("bh", "bonferroni")
KINDS = ("numeric", "categorical", "timestamp")
_HOURS = np.array([f"{h:02d}:00 UTC" for h in range(24)] + [None], dtype=object)
_DAYS = np.array(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", None], dtype=object)


def adjust_p_values(p_values, method: str = "bh") -> np.ndarray:
    """Adjusted p-values for a family of tests: ``"bh"`` (Benjamini-Hochberg step-up, controls the false discovery
    rate) or ``"bonferroni"`` (``min(1, m p)``, controls the family-wise error rate). NaN p-values (no test) stay
    NaN and do not count in ``m``."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    if np.any((q < 0) | (q > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, q * m)
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])  # step-up: monotone from the top
    res = np.empty(m)
    res[order] = adjusted
    out[ok] = res
    return out


# ------------------------------------------------------------------------------------------------ field kinds
def field_kinds_from_encoder(encoder) -> dict[str, str]:
    """``{raw column: "numeric" | "categorical" | "timestamp"}`` for every column a fitted
    :class:`~obsad.features.FeatureEncoder` encodes: its ``numeric`` and ``timestamp`` roles by name, every other
    encoded role (categorical codes, addresses, high-cardinality names, text) as ``categorical``, on its raw values.
    Dropped columns are not tested."""
    kinds = {}
    for st in encoder.columns_:
        role = str(st["role"])
        if role.startswith("drop") or role == "excluded" or not (st.get("numeric") or st.get("categorical")):
            continue
        kinds[str(st["column"])] = role if role in ("numeric", "timestamp") else "categorical"
    return kinds


def infer_field_kinds(frame: pd.DataFrame, max_code_values: int = 16) -> dict[str, str]:
    """Field kinds from dtypes when no encoder is at hand: numbers with more than ``max_code_values`` distinct values
    are ``numeric``, datetime columns ``timestamp``, every other column (strings, booleans, small integer codes)
    ``categorical``; columns with nothing in them are left out."""
    kinds = {}
    for name in frame.columns:
        s = frame[name]
        if s.notna().sum() == 0:
            continue
        if pd.api.types.is_datetime64_any_dtype(s):
            kinds[str(name)] = "timestamp"
            continue
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.nunique() > max_code_values:
            kinds[str(name)] = "numeric"
        else:
            kinds[str(name)] = "categorical"
    return kinds


# ------------------------------------------------------------------------------------------------ the tests
def _numbers(series: pd.Series | None, n: int) -> np.ndarray:
    if series is None:
        return np.full(n, np.nan)
    values = pd.Series(pd.to_numeric(series, errors="coerce"), copy=False)
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _chi2_table(table: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity of a 2 x B count table (empty columns ignored): statistic and p-value."""
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    return stat, float(stats.chi2.sf(stat, table.shape[1] - 1))


def _numeric_test(ref: np.ndarray, cur: np.ndarray) -> dict:
    r_ok, c_ok = np.isfinite(ref), np.isfinite(cur)
    r, c = ref[r_ok], cur[c_ok]
    miss_r, miss_c = 1.0 - r_ok.mean(), 1.0 - c_ok.mean()
    p_values, effect, shift, detail = [], abs(miss_c - miss_r), None, []
    if len(r) and len(c):
        ks = stats.ks_2samp(r, c, method="asymp")
        p_values.append(float(ks.pvalue))
        effect = max(effect, float(ks.statistic))
        shift = float(stats.wasserstein_distance(r, c))
        detail.append(f"median {np.median(r):.4g} -> {np.median(c):.4g}")
    if miss_r > 0 or miss_c > 0:
        n_miss = np.array([[len(ref) - len(r), len(cur) - len(c)], [len(r), len(c)]], dtype=np.float64).T
        p_values.append(_chi2_table(n_miss)[1])
        if abs(miss_c - miss_r) >= 0.005:
            detail.append(f"missing {miss_r:.1%} -> {miss_c:.1%}")
    p = min(1.0, len(p_values) * min(p_values)) if p_values else np.nan
    return {"kind": "numeric", "p_value": p, "shift": shift, "effect": effect, "missing_reference": miss_r,
            "missing_current": miss_c, "detail": "; ".join(detail)}


def _categorical_test(ref: pd.Series, cur: pd.Series, *, max_categories: int, min_expected: float) -> dict:
    n_r, n_c = len(ref), len(cur)
    pooled = pd.concat([ref.reset_index(drop=True), cur.reset_index(drop=True)], ignore_index=True)
    if isinstance(pooled.dtype, pd.CategoricalDtype):
        pooled = pooled.astype(object)
    codes, uniques = pd.factorize(pooled, use_na_sentinel=True)
    k = len(uniques)
    present = codes >= 0
    counts = np.bincount(codes[present], minlength=k)
    # a value gets its own bin when its expected count is >= min_expected on both sides
    least = min_expected * (n_r + n_c) / max(1, min(n_r, n_c))
    ranked = np.argsort(-counts, kind="stable")
    own = ranked[counts[ranked] >= least][:max_categories]
    bin_of = np.full(k + 1, len(own), dtype=np.int64)  # index k: missing; default: <other>
    bin_of[own] = np.arange(len(own))
    bin_of[k] = len(own) + 1
    bins = bin_of[np.where(present, codes, k)]
    table = np.stack([np.bincount(bins[:n_r], minlength=len(own) + 2),
                      np.bincount(bins[n_r:], minlength=len(own) + 2)]).astype(np.float64)
    stat, p = _chi2_table(table)
    share = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    diff = share[1] - share[0]
    tvd = 0.5 * float(np.abs(diff).sum())
    names = [str(uniques[i]) for i in own] + ["<other>", "<missing>"]
    detail = []
    if n_r and n_c:
        top = int(np.argmax(np.abs(diff)))
        if abs(diff[top]) >= 0.005:
            detail.append(f"{names[top]!r} {share[0, top]:.1%} -> {share[1, top]:.1%}")
        seen = np.bincount(codes[:n_r][present[:n_r]], minlength=k) > 0
        cur_codes = codes[n_r:]
        new = (cur_codes >= 0) & ~seen[np.maximum(cur_codes, 0)]
        if new.mean() >= 0.005:  # descriptive only: the test itself bins both samples alike
            top_new = uniques[int(np.argmax(np.bincount(cur_codes[new], minlength=k)))]
            detail.append(f"{new.mean():.1%} of current values never seen in the reference (most frequent: "
                          f"{str(top_new)!r})")
    miss_r, miss_c = share[0, -1], share[1, -1]
    return {"kind": "categorical", "p_value": p if n_r and n_c else np.nan, "shift": tvd, "effect": tvd,
            "missing_reference": float(miss_r), "missing_current": float(miss_c), "detail": "; ".join(detail)}


def _calendar(series: pd.Series | None, n: int) -> tuple[pd.Series, pd.Series]:
    """Hour of the day and day of the week (UTC) of each time, as labels (None where missing)."""
    from obsad.features.values import to_epoch_ms

    if series is None:
        missing = pd.Series(np.full(n, None, dtype=object))
        return missing, missing
    ms = to_epoch_ms(series.reset_index(drop=True))[0]
    ok = np.isfinite(ms)
    days = np.floor(np.where(ok, ms, 0.0) / 86_400_000.0)
    hour = np.where(ok, np.floor(np.where(ok, ms, 0.0) / 3_600_000.0) - 24.0 * days, 24).astype(np.int64)
    dow = np.where(ok, (days.astype(np.int64) + 3) % 7, 7)  # 1970-01-01 was a Thursday
    return pd.Series(_HOURS[hour], dtype=object), pd.Series(_DAYS[dow], dtype=object)


def _timestamp_test(ref: pd.Series | None, cur: pd.Series | None, n_r: int, n_c: int, **options) -> dict:
    parts = [_categorical_test(a, b, **options) for a, b in zip(_calendar(ref, n_r), _calendar(cur, n_c))]
    best = min(parts, key=lambda row: (np.inf if np.isnan(row["p_value"]) else row["p_value"]))
    p_values = [row["p_value"] for row in parts if not np.isnan(row["p_value"])]
    detail = best["detail"].split("; ")[0] if best["detail"] else ""
    return {"kind": "timestamp", "p_value": min(1.0, 2.0 * min(p_values)) if p_values else np.nan,
            "shift": max(row["shift"] for row in parts), "effect": max(row["effect"] for row in parts),
            "missing_reference": parts[0]["missing_reference"], "missing_current": parts[0]["missing_current"],
            "detail": detail}


def field_tests(reference: pd.DataFrame, current: pd.DataFrame, kinds: Mapping[str, str] | None = None, *,
                correction: str = "bh", max_categories: int = 50, min_expected: float = 5.0) -> pd.DataFrame:
    """One row per field: did its distribution move from ``reference`` to ``current`` (raw event frames)?

    ``kinds``: ``{column: "numeric" | "categorical" | "timestamp"}`` (default: :func:`infer_field_kinds` of
    ``reference``). A column absent from a frame reads as missing there. The table has :data:`FIELD_COLUMNS`, most
    significant field first (smallest adjusted p-value, then largest ``effect``, then name).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if not isinstance(reference, pd.DataFrame) or not isinstance(current, pd.DataFrame):
        raise TypeError("reference and current must be DataFrames of raw events")
    kinds = dict(infer_field_kinds(reference) if kinds is None else kinds)
    rows = []
    for name in sorted(kinds):
        kind = kinds[name]
        r = reference[name] if name in reference.columns else None
        c = current[name] if name in current.columns else None
        if kind == "numeric":
            row = _numeric_test(_numbers(r, len(reference)), _numbers(c, len(current)))
        elif kind == "categorical":
            r = r if r is not None else pd.Series(np.full(len(reference), None, dtype=object))
            c = c if c is not None else pd.Series(np.full(len(current), None, dtype=object))
            row = _categorical_test(r, c, max_categories=int(max_categories), min_expected=float(min_expected))
        elif kind == "timestamp":
            row = _timestamp_test(r, c, len(reference), len(current), max_categories=24,
                                  min_expected=float(min_expected))
        else:
            raise ValueError(f"field {name!r}: kind must be one of {KINDS}, got {kind!r}")
        rows.append({"field": name, **row})
    table = pd.DataFrame(rows, columns=[c for c in FIELD_COLUMNS if c != "p_value_adjusted"])
    table.insert(3, "p_value_adjusted", adjust_p_values(table["p_value"].to_numpy(dtype=np.float64), correction))
    table = table.sort_values(["p_value_adjusted", "effect", "field"], ascending=[True, False, True],
                              na_position="last", kind="stable").reset_index(drop=True)
    return table[FIELD_COLUMNS]


# ------------------------------------------------------------------------------------------------ injection
DRIFT_KINDS = ("numeric_shift", "new_value", "missing", "new_service")


def inject_drift(events: pd.DataFrame, kind: str, *, field: str | Sequence[str], rng: np.random.Generator,
                 magnitude: float = 0.5, share: float = 0.2, value: str = "drift-new-value",
                 scale: float | None = None) -> pd.DataFrame:
    """A copy of ``events`` with one kind of drift injected (the frame's other fields untouched):

    - ``"numeric_shift"``: ``field`` += ``magnitude`` x its standard deviation (``scale``, default: the standard
      deviation of the frame's present values; pass the reference's to shift every window alike);
    - ``"new_value"``: ``field`` takes the new value ``value`` in a random ``share`` of the rows where it is present;
    - ``"missing"``: ``field`` (one or several) goes missing in a random ``share`` of the rows (``share=1``: all);
    - ``"new_service"``: a random ``share`` of the rows where the first of ``field`` is present take new values in
      every field of ``field``: ``value`` in the first, ``<value>.<last part of the field's name>`` in the others
      (e.g. service name and host name: a service never seen before).
    """
    if kind not in DRIFT_KINDS:
        raise ValueError(f"kind must be one of {DRIFT_KINDS}, got {kind!r}")
    fields = [field] if isinstance(field, str) else list(field)
    missing = [f for f in fields if f not in events.columns]
    if missing:
        raise ValueError(f"no column {', '.join(map(repr, missing))} in the events")
    out = events.copy()
    n = len(out)
    if kind == "numeric_shift":
        x = pd.to_numeric(out[fields[0]], errors="coerce").astype("float64")
        sd = float(np.nanstd(x.to_numpy())) if scale is None else float(scale)
        out[fields[0]] = x + float(magnitude) * sd
        return out
    if kind == "missing":
        rows = rng.random(n) < float(share)
        for f in fields:
            out[f] = out[f].mask(rows)
        return out
    present = out[fields[0]].notna().to_numpy()
    rows = present & (rng.random(n) < float(share))
    for i, f in enumerate(fields):
        col = out[f].astype(object)
        col.iloc[np.flatnonzero(rows)] = value if kind == "new_value" or i == 0 else f"{value}.{f.rsplit('.', 1)[-1]}"
        out[f] = col
    return out
