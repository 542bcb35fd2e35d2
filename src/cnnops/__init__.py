"""cnnops: an end-to-end MLOps pipeline for image-classification CNNs.

The version is pyproject.toml's, read from the installed package's metadata, so it is written once.
A Bento carries the library's serving code without installing it: there the version is unknown
(the Bento's own labels name what it serves).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnops")
except PackageNotFoundError:
    __version__ = "unknown"
