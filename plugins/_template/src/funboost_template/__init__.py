"""Template funboost broker plugin (a queue of files in a directory)."""
from funboost_template.broker import DirectoryBroker

__all__ = ["DirectoryBroker"]
