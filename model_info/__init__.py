"""The model descriptions attnviz ships (``*.yaml``, package data of ``attnviz.model_info``).

A user's own folders add more: ``ATTNVIZ_MODEL_INFO=folder[:folder...]`` (see
:func:`attnviz.pipeline.models.info.known_models`).
"""
