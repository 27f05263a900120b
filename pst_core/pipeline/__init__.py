"""The stage graph: its plan, the stage functions, the checks before a run, run records."""
