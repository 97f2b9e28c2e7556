"""The paper's experiments as commands: named sets of runs, their baselines and their report."""

from emomatch.experiments.report import write_experiment_report
from emomatch.experiments.run import run_experiment
from emomatch.experiments.spec import ExperimentSpec, load_spec, shipped_experiments

__all__ = [
    "ExperimentSpec",
    "load_spec",
    "run_experiment",
    "shipped_experiments",
    "write_experiment_report",
]
