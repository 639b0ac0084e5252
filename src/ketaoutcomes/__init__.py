"""ketaoutcomes: outcome studies of ketamine in depression.

Export or synthetic cohort -> DuckDB warehouse -> validation -> analysis
datasets -> time-to-response and relapse models -> HTML report. See README.md.
"""

__version__ = "0.1.0"
