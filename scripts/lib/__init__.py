"""What the scripts share: ``common.sh`` for the shell scripts (venvs and their installation),
``lslocal`` for the Python ones (a real, local Label Studio to run and drive)."""
