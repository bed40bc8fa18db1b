"""Benchmarks: tables of ratios against baselines timed in the same process.

`pipelines` is imported first: its package init turns TensorFlow's start-up
log lines down before any benchmark imports TensorFlow.
"""

import pipelines  # noqa: F401
