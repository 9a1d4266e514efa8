"""zerotir.analysis"""

N_BOOT = 200
"""Seed-bootstrap resamples per fit unless told otherwise (`zerotir analyze --bootstrap`, a study spec's
`analysis.bootstrap`): the one default every fitting entry point shares."""
