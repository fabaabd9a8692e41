"""OCSF events: a realistic simulator with labelled anomalies, flat/nested conversion, schema validation
and a loader for anyone's exports."""

from .scenarios import SCENARIOS, Scenario
from .simulate import Simulation, simulate, write_simulation
