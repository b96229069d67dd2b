"""What a user runs: a suite (:func:`run`), its eval and gates, fault runs, and promotion into the worker."""

from workbench.core.store import load_run
from workbench.workflows.runner import RunResult, arun, run
from workbench.workflows.suite import Suite, load_suite

__all__ = ["RunResult", "Suite", "arun", "load_run", "load_suite", "run"]
