"""Does curation help? Frozen-encoder probes of SimCLR models trained on each arm at equal budget."""

from curate.eval.arms import ADAINF_WEAK, Arm, RunData, arm_names, load_run_data, register_arm, run_arms
from curate.eval.data import ProbeData, load_probe, load_split, match_channels
from curate.eval.harness import ArmResult, EvalReport, evaluate_arms, plot
from curate.eval.probe import encode, knn_accuracy, linear_probe

__all__ = ["ADAINF_WEAK", "Arm", "ArmResult", "EvalReport", "ProbeData", "RunData", "arm_names", "encode",
           "evaluate_arms", "knn_accuracy", "linear_probe", "load_probe", "load_run_data", "load_split",
           "match_channels", "plot", "register_arm", "run_arms"]
