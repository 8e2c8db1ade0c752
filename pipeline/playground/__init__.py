"""The playground: run a model now on typed or random input, outside the dashboard's server process.

- :mod:`.records`: requests, limits and results (numpy only); result files are arrays (``.npz``) + JSON.
- :mod:`.protocol`: JSON messages over the worker's Unix socket (standard library only).
- :mod:`.client`: what the dashboard calls: start the worker, submit a request, wait, read the result.
- :mod:`.worker`: the long-lived model worker process.
- :mod:`.engine`: the model work itself (torch; imported by the worker only).

Importing this package imports none of them (the dashboard must never import torch nor unpickle).
"""
