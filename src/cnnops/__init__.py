"""cnnops: an end-to-end MLOps pipeline for image-classification CNNs.

The version is pyproject.toml's, read from the installed package's metadata, so it is written once.
"""

from importlib.metadata import version

__version__ = version("cnnops")
