"""Production monitoring: has the event stream drifted from what the model was fitted on?

- :mod:`obsad.monitor.drift` — :class:`DriftDetector` (kernel MMD permutation test or classifier two-sample test
  on embeddings, with a controlled false-alarm rate), :class:`DriftResult`, :func:`ks_fraction_rule` (the
  per-dimension KS rule it replaces), :func:`power_curve` (false-alarm rate and power per window size);
- :mod:`obsad.monitor.fields` — per-field tests on the raw fields (KS + Wasserstein for numbers, chi-square +
  total variation for categories, hour of day / day of week for timestamps) with Benjamini-Hochberg or Bonferroni
  correction, and :func:`inject_drift` (the kinds of drift to measure power on);
- :mod:`obsad.monitor.alerts` — alert quality from late, partial analyst verdicts: :class:`AlertLog` /
  :class:`VerdictLog` (append-only Parquet), :func:`daily_quality` / :func:`rolling_quality` /
  :func:`quality_summary` (precision, recall, false-positive rate, alert volume with Wilson or Clopper-Pearson
  intervals, timezone-aware days ending at ``now``), :func:`simulate_analyst`;
- :mod:`obsad.monitor.resources` — the cost of the scoring path: :class:`ResourceMonitor` (psutil CPU and RSS),
  :func:`time_scoring` (latency percentiles by batch size), :func:`metrics_from_prometheus` (the service's
  ``/metrics``), :class:`KnownGoodFilter` and :func:`prefilter_tradeoff` (events saved versus recall lost);
- :mod:`obsad.monitor.health` — :func:`health_report` (:class:`HealthCheck` per measured number against
  :data:`DEFAULT_TARGETS`, the checklist; a check not measured never passes);
- :mod:`obsad.monitor.retraining` — :class:`RetrainPolicy` (decides from measured signals), :func:`retrain` (the
  real pipeline on a recent window), :func:`trimmed_reference` (the poisoned-baseline mitigation),
  :func:`compare_on_labelled` / :func:`promotion_decision` (champion vs challenger on the same labelled events,
  paired bootstrap), :func:`read_shadow_log`, :func:`poisoned_baseline_experiment`;
- :mod:`obsad.monitor.investigate` — :class:`Investigator` (a flagged event's fields ranked by surprise, distance
  from its nearest reference events and the window view's explanation; neighbours; recommendation),
  :func:`attribution_accuracy`;
- :mod:`obsad.monitor.registry` — :class:`ModelRegistry` (versioned packages, promotion, one-step rollback);
- :mod:`obsad.monitor.commands` — the ``obsad drift`` verb; :mod:`obsad.monitor.health_commands` — ``obsad health``; :mod:`obsad.monitor.registry_commands` — ``obsad registry``.

The names below are imported on first use, so that ``obsad``'s command line, which imports
:mod:`obsad.monitor.commands` to build its parser, does not pay for scipy and pandas at start-up.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AttributionAccuracy": "investigate",
    "FieldEvidence": "investigate",
    "Investigation": "investigate",
    "InvestigationError": "investigate",
    "Investigator": "investigate",
    "attribution_accuracy": "investigate",
    "ModelRegistry": "registry",
    "RegistryError": "registry",
    "RetrainPolicy": "retraining",
    "RetrainSignals": "retraining",
    "RetrainDecision": "retraining",
    "retrain": "retraining",
    "out_of_sample_scores": "retraining",
    "trim_rows": "retraining",
    "trimmed_reference": "retraining",
    "read_shadow_log": "retraining",
    "compare_on_labelled": "retraining",
    "compare_models": "retraining",
    "promotion_decision": "retraining",
    "poisoned_baseline_experiment": "retraining",
    "package_age_days": "retraining",
    "AlertLog": "alerts",
    "AlertQualityError": "alerts",
    "QualitySummary": "alerts",
    "VerdictLog": "alerts",
    "check_verdicts": "alerts",
    "daily_quality": "alerts",
    "latest_verdicts": "alerts",
    "proportion_interval": "alerts",
    "quality_summary": "alerts",
    "rolling_quality": "alerts",
    "simulate_analyst": "alerts",
    "DriftDetector": "drift",
    "DriftResult": "drift",
    "classifier_test": "drift",
    "clopper_pearson": "drift",
    "ks_fraction_rule": "drift",
    "mmd_test": "drift",
    "power_curve": "drift",
    "whiten_pooled": "drift",
    "adjust_p_values": "fields",
    "DEFAULT_TARGETS": "health",
    "HealthCheck": "health",
    "HealthReport": "health",
    "Target": "health",
    "health_report": "health",
    "KnownGoodFilter": "resources",
    "ResourceMonitor": "resources",
    "ScoringTimes": "resources",
    "ServiceMetrics": "resources",
    "kind_columns": "resources",
    "metrics_from_prometheus": "resources",
    "prefilter_tradeoff": "resources",
    "time_scoring": "resources",
    "field_kinds_from_encoder": "fields",
    "field_tests": "fields",
    "infer_field_kinds": "fields",
    "inject_drift": "fields",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
