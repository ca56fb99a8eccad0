"""The end-to-end job: train, export, run, validate, report."""
