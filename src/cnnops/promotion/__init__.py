"""Who becomes champion and why: the gate, registration, infra-validation, import, retraining and
the registry's status."""
