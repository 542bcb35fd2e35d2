"""MLflow: stores, the project's tracking server, the tags every run carries, the promotion and
retrain locks, and reads of the registry."""
