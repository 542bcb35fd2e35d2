"""The typed config and its reference, the pipeline parameters, and the names cnnops uses in the
registry."""
