"""attnviz dashboard: a Dash app that reads attnviz stores through :mod:`pipeline.store` (never torch)."""
