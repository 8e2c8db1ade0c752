"""attnviz dashboard: a Dash app that reads attnviz stores through :mod:`attnviz.pipeline.store` (never torch)."""
