"""ddg-sweep: the DDG method and the machinery to run DomainBed sweeps of it."""

__version__ = "0.1.0"

# Bumped whenever a change alters what a job computes; part of every job_id.
PROTOCOL_VERSION = 1
