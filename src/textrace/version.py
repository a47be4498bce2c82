"""textrace's version, in a module of its own so that the recorder can stamp it on a
recording without importing the package's scripting entry (textrace/__init__.py)."""

__version__ = "0.1.0"
