"""The Argilla ASGI app with the ``sqlsearch`` engine registered, importable as ``argilla_app:app``.

Uvicorn imports the app by this name in each of its worker processes when the server runs more than one
(``launch_server.py --workers N``); importing the engine first registers it in every worker, and
``tune_process`` (``tuning.py``) installs the webhook gate and freezes the startup heap there.
"""

import argilla_sqlsearch.engine  # noqa: F401  (registers the engine in this process)
from argilla_server import app
from tuning import tune_process

tune_process()

__all__ = ["app"]
