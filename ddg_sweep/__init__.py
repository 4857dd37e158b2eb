"""ddg-sweep: the DDG method and the machinery to run DomainBed sweeps of it."""

__version__ = "0.1.0"

# Bumped whenever a change alters what a job computes; part of every job_id and of every
# record's args (`protocol_version`). 2: `lmd` is the alignment loss's image/text mix (it was the
# Stage II weight, now `align_weight`), stage lengths may be fractions, VL2V has two stages,
# every algorithm has SWAD, the tiny models are pretrained.
PROTOCOL_VERSION = 2
