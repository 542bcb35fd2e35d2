"""Drift from served traffic: the test, the model's reference, the monitor and its window, the
report and the sample keeper."""
