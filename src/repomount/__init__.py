"""repomount: mount a remote repository as a local folder."""

__version__ = "0.1.0"
