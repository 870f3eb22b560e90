from __future__ import annotations

from hypothesis import settings

# Tests are deterministic: hypothesis explores the same examples on every run (a seed derived
# from each test), and keeps no example database between runs. Explore more locally with
# --hypothesis-profile=explore.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", max_examples=5000, database=None)
settings.load_profile("ci")
