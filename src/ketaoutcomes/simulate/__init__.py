"""Synthetic cohorts with known ground truth, in the import format.

``simulate_cohort(settings, out_dir)`` writes one file per import table plus
``truth.json``; ``simulate_frames(settings)`` returns the same tables as polars
frames for small cohorts. See :mod:`ketaoutcomes.simulate.cohort` for the
generator's design and :class:`GeneratorParameters` for its parameters.
"""

from .cohort import CHUNK_SIZE, GENERATOR_VERSION, iter_chunks, polars_schema, simulate_chunk, simulate_frames
from .params import DEFAULT_ARM_PARAMETERS, ArmParameters, GeneratorParameters
from .writer import LATENT_FILE, TRUTH_FILE, build_truth, simulate_cohort

__all__ = [
    "CHUNK_SIZE",
    "GENERATOR_VERSION",
    "LATENT_FILE",
    "TRUTH_FILE",
    "ArmParameters",
    "DEFAULT_ARM_PARAMETERS",
    "GeneratorParameters",
    "build_truth",
    "iter_chunks",
    "polars_schema",
    "simulate_chunk",
    "simulate_cohort",
    "simulate_frames",
]
