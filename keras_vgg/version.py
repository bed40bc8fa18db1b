"""The package version: one place, read by `setup.py` without importing the
package (which would need Keras installed before it is)."""

__version__ = "0.1.0"
