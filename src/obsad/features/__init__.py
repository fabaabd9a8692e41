"""Turn any flat event table into model inputs, without listing columns by hand.

- :mod:`obsad.features.roles` — the role of each column, inferred from its data (rules in its docstring);
- :mod:`obsad.features.text` — templating of free text and ids (``/orders/<NUM>/items``);
- :mod:`obsad.features.values` — reading any dtype as numbers, instants or canonical strings;
- :mod:`obsad.features.encoder` — :class:`FeatureEncoder` (fit/transform, JSON persistence) and
  :class:`EncodedFeatures` (numeric block, categorical ids, names, cardinalities, sources);
- :mod:`obsad.features.frames` — encoded features as Parquet tables keyed by event uid, and back.

>>> enc = FeatureEncoder().fit(events)            # doctest: +SKIP
>>> feats = enc.transform(events)                 # doctest: +SKIP
>>> enc.describe()                                # doctest: +SKIP
"""

from .encoder import FORMAT, VERSION, EncodedFeatures, FeatureEncoder
from .frames import encoded_from_frame, encoded_to_frame, read_encoded
from .roles import OVERRIDE_ROLES
from .text import template, template_array

__all__ = ["FeatureEncoder", "EncodedFeatures", "encoded_to_frame", "encoded_from_frame", "read_encoded", "template", "template_array", "OVERRIDE_ROLES", "FORMAT", "VERSION"]
