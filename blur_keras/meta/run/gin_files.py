"""Gin files of the entry points: ``include 'x.gin'`` finds ``x.gin`` beside the including file."""

import os

import gin

__all__ = ["search_beside"]


def search_beside(paths):
    """Put the folders of ``paths`` first on gin's include search path (the first file's first).

    gin's public ``add_config_file_search_path`` appends, after the working directory, whose
    miss gin's resource reader logs as an error; the folder of the including file goes first.
    """
    for path in reversed(list(paths or ())):
        folder = os.path.dirname(os.path.abspath(path))
        if folder in gin.config._LOCATION_PREFIXES:  # to the front, ahead of earlier files'
            gin.config._LOCATION_PREFIXES.remove(folder)
        gin.config._LOCATION_PREFIXES.insert(0, folder)
