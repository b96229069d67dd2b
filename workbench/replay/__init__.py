"""Replay one recorded conversation, as text or as audio in real time, through the voice pipeline, and time every turn.

Running a whole suite (strategies x conversations x modes, resumable) is :mod:`workbench.workflows.runner`.
"""
