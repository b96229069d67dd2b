"""DianaChat Workbench."""
