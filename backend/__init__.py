"""Label Studio adapter of the active-learning backend (HTTP, Redis/RQ, storage) around model/."""
