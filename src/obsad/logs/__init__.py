"""The log pipeline (Part 9): raw HDFS / OpenStack log lines -> Drain3 templates -> sessions of template ids ->
a causal next-template Transformer -> calibrated session scores.

- :mod:`obsad.logs.formats` — the Loghub line formats (header regexes, session ids), readers, labels;
- :mod:`obsad.logs.simulate` — simulators that write raw logs in those exact formats, with true templates;
- :mod:`obsad.logs.parse` — Drain3 with per-format masking, a train-only template vocabulary, grouping accuracy;
- :mod:`obsad.logs.model` — the next-template Transformer, its training, and vocabulary resizing for fine-tuning.
"""
