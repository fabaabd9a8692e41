"""The service's Prometheus metrics, in a registry of its own (several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: The endpoints measured by name; any other path counts as "other" (label values stay a fixed, small set).
ENDPOINTS = ("/v1/score", "/v1/similar", "/v1/model", "/v1/admin/reload", "/healthz", "/metrics")
#: Latency buckets in seconds, fine below 10 ms where single events land.
BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    """Request counts by status, latency, events scored and flagged, model version, reloads, shadow counts."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("obsad_requests", "HTTP requests by endpoint, method and status code",
                                ("endpoint", "method", "status"), registry=r)
        self.latency = Histogram("obsad_request_seconds", "Time from request to response, by endpoint",
                                 ("endpoint",), buckets=BUCKETS, registry=r)
        self.events_scored = Counter("obsad_events_scored", "Events scored by the champion model", registry=r)
        self.anomalies = Counter("obsad_anomalies_flagged", "Events the champion model flagged", registry=r)
        self.events_rejected = Counter("obsad_events_rejected", "Events refused by the per-event checks",
                                       registry=r)
        self.model = Info("obsad_model", "The champion model being served", registry=r)
        self.model_loaded = Gauge("obsad_model_loaded_timestamp_seconds", "When the champion was loaded",
                                  registry=r)
        self.recall = Gauge("obsad_similar_index_recall", "recall@k of the similar-event index against exact "
                            "search, measured at load (1 for an exact index)", registry=r)
        self.reloads = Counter("obsad_model_reloads", "Reload requests by result", ("result",), registry=r)
        self.shadow_events = Counter("obsad_shadow_events_scored", "Events scored by the challenger model",
                                     registry=r)
        self.shadow_anomalies = Counter("obsad_shadow_anomalies_flagged", "Events the challenger model flagged",
                                        registry=r)
        self.shadow_disagreements = Counter("obsad_shadow_disagreements",
                                            "Events flagged by exactly one of champion and challenger", registry=r)
        self.shadow_records = Counter("obsad_shadow_log_records", "Records written to the shadow log", registry=r)
        self.shadow_dropped = Counter("obsad_shadow_dropped_events", "Events not shadow-scored (queue full or "
                                      "challenger failure)", registry=r)
        self.shadow_model = Info("obsad_shadow_model", "The challenger model scored in the shadow", registry=r)
        self.scoring_processes = Gauge("obsad_scoring_processes", "Scoring processes running (serve --workers; 0: "
                                       "batches are scored in the service process)", registry=r)

    #: What a scoring process counts (:class:`obsad.serve.pool.Tally`) and adds here with each answer.
    COUNTED = ("events_scored", "anomalies", "events_rejected", "shadow_events", "shadow_anomalies",
               "shadow_disagreements", "shadow_records", "shadow_dropped")

    def add_counts(self, counts: dict) -> None:
        """Add a scoring process's counts (name -> events since its previous answer)."""
        for name, n in counts.items():
            if name in self.COUNTED and int(n) > 0:
                getattr(self, name).inc(int(n))

    @staticmethod
    def endpoint_of(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def set_models(self, champion, challenger) -> None:
        self.model.info({"version": champion.version, "obsad_version": str(champion.manifest.get("obsad_version")),
                         "created": str(champion.manifest.get("created")), "index": champion.similar.kind})
        self.model_loaded.set(champion.loaded_at)
        self.recall.set(champion.similar.recall)
        if challenger is not None:
            self.shadow_model.info({"version": challenger.version,
                                    "created": str(challenger.manifest.get("created"))})

    def render(self) -> bytes:
        return generate_latest(self.registry)
