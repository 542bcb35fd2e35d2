"""Thin kfp components: each body builds the typed config, calls one cnnops library function and
writes its outputs. Only the standard library and kfp are imported at module top level; the
library is imported inside the bodies, where the task's image provides it.
"""

from importlib import metadata

# The project image every component runs in (infra/docker/Dockerfile), named here and nowhere else:
# `make image` tags it so, and `cnnops compile --image` rewrites it for a registry. Its version is
# the package's. kfp.local's SubprocessRunner ignores it and runs the bodies in the current venv.
# The image holds kfp (cnnops depends on it), so components set install_kfp_package=False: no pip
# install, and no package index needed, at the start of every task.
IMAGE_NAME = "cnnops"
BASE_IMAGE = f"{IMAGE_NAME}:{metadata.version('cnnops')}"
