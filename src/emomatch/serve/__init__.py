"""The HTTP service and web page over a model bundle (``emomatch serve``); see docs/api.md."""

from emomatch.serve.app import ServeSettings, create_app
from emomatch.serve.server import load_predictors, run_server

__all__ = ["ServeSettings", "create_app", "load_predictors", "run_server"]
