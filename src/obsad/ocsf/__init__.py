"""OCSF events: a realistic simulator with labelled anomalies, flat/nested conversion, schema validation
and a loader for anyone's exports."""

from .load import LoadReport, LoadResult, OCSFLoadError, load_events
from .month import Change, Month, MonthError, simulate_month, write_month
from .scenarios import SCENARIOS, Scenario
from .simulate import Simulation, simulate, write_simulation

__all__ = ["load_events", "LoadResult", "LoadReport", "OCSFLoadError", "SCENARIOS", "Scenario", "Simulation",
           "simulate", "write_simulation", "Change", "Month", "MonthError", "simulate_month", "write_month"]
