"""Thin kfp components: each body builds the typed config, calls one cnnops library function and
writes its outputs. Only the standard library and kfp are imported at module top level; the
library is imported inside the bodies, where the task's image provides it.
"""

# The project image every component runs in on a cluster (built from infra/docker). kfp.local's
# SubprocessRunner ignores it and runs the bodies in the current virtual environment. Both already
# hold kfp (cnnops depends on it), so components set install_kfp_package=False: no pip install,
# and no package index needed, at the start of every task.
BASE_IMAGE = "ghcr.io/cnnops/cnnops:0.1.0"
