"""Replay recorded conversations, text and audio, through the full voice pipeline and time every turn."""

from workbench.replay.runner import RunResult, arun, run
from workbench.replay.store import load_run
from workbench.replay.suite import Suite, load_suite

__all__ = ["RunResult", "Suite", "arun", "load_run", "load_suite", "run"]
