"""AI vs real face classifier: the library behind the DVC pipeline, the server and the web app."""

__version__ = "0.1.0"
