"""Development-only tools, never needed on a user's machine: stand-in base images for the compose
check (``standin_images``) and the repository-wide mechanical edits (``normalize.sh``)."""
