"""Plumbing every layer may use: errors, console lines, atomic writes, the state folder, processes,
retries, the step memo, the run log, the Docker client."""
