"""Studies: a grid of config overrides over a base config, each cell an ordinary run dir under one study dir.

    zerotir study configs/studies/toy-scaling.yaml --jobs 2 --preregister

`spec` (the YAML spec, validated before anything runs), `state` (the study dir: finished cells, continuation),
`backends` (a cell as a subprocess, here or as a Ray task), `runner` (scheduling, progress, preregistration,
analysis), `cell` (the per-cell process entry point).
"""

from zerotir.study.runner import StudyError, run_study
from zerotir.study.spec import SpecError, StudySpec, load_spec

__all__ = ["SpecError", "StudyError", "StudySpec", "load_spec", "run_study"]
