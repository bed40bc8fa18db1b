"""SavedModel, TF-Serving, TFLite and QAT exports of trained runs.

`pipelines` is imported first, before TensorFlow: its `__init__` turns
TensorFlow's own console output down, which works only before TensorFlow
loads (see `pipelines/__init__.py`).
"""

import pipelines  # noqa: F401
