"""Messy variants of simulated OCSF events, as real exports have them (shared by the tests of the fast paths)."""

from __future__ import annotations

import copy
import json
import random

T0 = 1_772_700_000_000


def _mutate(value, rng: random.Random):
    """One messy variant of a value, as real exports have them."""
    choices = [
        lambda: None,                                        # missing
        lambda: str(value) if value is not None else "null",  # numbers (and the rest) as text
        lambda: f" {value} ",
        lambda: "true" if rng.random() < 0.5 else "false",   # booleans as text
        lambda: "abc",                                       # malformed
        lambda: "N/A",
        lambda: {"value": value, "x": 1},                    # an object where a scalar was
        lambda: [value, value],                              # an array of scalars
        lambda: [{"type": f"t{rng.randrange(3)}", "name": "n"}, {"type_id": 2}],  # an array of objects
        lambda: json.dumps({"k": value, "z": "q"}),          # JSON text
        lambda: json.dumps([1, 2]),
        lambda: "{not json",
        lambda: 2 ** 70,
        lambda: 1.5,
        lambda: float("nan"),
        lambda: True,
        lambda: "0012",
        lambda: "2023-11-14T22:13:20Z",
        lambda: [],
        lambda: {},
        lambda: "é ünï",
        lambda: "",
    ]
    return rng.choice(choices)()


def _mess_up(obj: dict, rng: random.Random, p: float) -> None:
    for key in list(obj):
        if isinstance(obj[key], dict) and rng.random() > p:
            _mess_up(obj[key], rng, p)
        elif rng.random() < p:
            if rng.random() < 0.15:
                del obj[key]
            else:
                obj[key] = _mutate(obj[key], rng)


def messy(events: list, seed: int, p: float) -> list:
    """A copy of ``events`` with a share ``p`` of the fields drifted, broken, nested, arrayed or dropped, some
    underscore names, odd times, and (in a batch) one record that is no object."""
    rng = random.Random(seed)
    out = copy.deepcopy(events)
    for event in out:
        _mess_up(event, rng, p)
        r = rng.random()
        if r < 0.05:
            event["src_endpoint_ip"] = f"1.2.3.{rng.randrange(9)}"
        elif r < 0.10:
            event["time"] = rng.choice([str(T0), T0 // 1000, "2026-03-05T12:00:00+01:00", "yesterday", None, 1e30])
        elif r < 0.12:
            event["time_dt"] = rng.choice(["2026-03-05T12:00:00Z", "garbage", 12345])
    if len(out) > 1:
        out[rng.randrange(len(out))] = rng.choice(["text", [1, 2], 17, {}, None])
    return out
