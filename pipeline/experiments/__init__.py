"""The paper's experiments (sections 4.1-4.2) on the data shipped here: ``python -m pipeline.reproduce``.

- ``paper``: the paper's own numbers (Tables 1-3, section 4.2), copied as printed.
- ``grid``: which models are trained (cells), for how long, over which seeds.
- ``runner``: one run per (cell, seed), recorded atomically; the grid, resumable and in parallel.
- ``tables``: mean and spread over seeds, beside the paper's numbers; Markdown, JSON and plots.
"""
