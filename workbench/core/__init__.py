"""The bottom layer: definitions every other package reads (metric catalogue, cell helpers).

Nothing here imports another ``workbench`` package, and this file imports no module, so any layer can use it.
"""
