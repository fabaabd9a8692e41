"""obsad: embedding-based anomaly detection for observability data.

The library the book teaches. Each module holds one concept:

- :mod:`obsad.paths` — where ``data/`` and the project live, whatever the working directory;
- :mod:`obsad.runtime` — device choice, mixed precision, seeding, the book's scale knob, timers;
- :mod:`obsad.io` — atomic writes of Parquet and JSON (no pickle anywhere);
- :mod:`obsad.ocsf` — the OCSF simulator, its scenarios and labels, schema validation, and the loader
  for anyone's OCSF exports;
- :mod:`obsad.features` — the :class:`~obsad.features.FeatureEncoder` that turns a flat event table into
  model inputs.
"""

__version__ = "0.1.0"
