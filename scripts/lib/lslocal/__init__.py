"""Run and drive a real, local Label Studio 1.23.2 for integration tests, the demo and benchmarks.

``from scripts.lib import lslocal`` gives every public name (the scripts, the benchmarks and the
tests import it from here). Split by concern:

- ``venv``: Label Studio's own venv, the offline environment it runs in, the migrated empty
  database template;
- ``process``: free ports, starting a server and waiting for /health, stopping its process group;
- ``auth``: a session login, creating a personal access token or reading the legacy token;
- ``admin``: ``LabelStudioAdmin``, an administrator's API client on the backend's own transport and
  token refresh (backend.ls_client, backend.ls_auth);
- ``cli``: ``python -m scripts.lib.lslocal --help``.

All traffic goes to the local server.
"""

from backend.ls_auth import LabelStudioError
from scripts.lib.lslocal.admin import (
    HTTP_TIMEOUT_S,
    MAX_FILES_PER_IMPORT,
    SAMPLING_VALUES,
    LabelStudioAdmin,
    choice_annotation,
)
from scripts.lib.lslocal.auth import (
    create_personal_access_token,
    get_legacy_token,
    jwt_claims,
    login_session,
    looks_like_jwt,
)
from scripts.lib.lslocal.cli import build_parser, main
from scripts.lib.lslocal.process import (
    DEFAULT_START_TIMEOUT_S,
    LabelStudioProcess,
    direct_session,
    free_port,
    port_is_free,
    start_label_studio,
    stop_serve,
)
from scripts.lib.lslocal.venv import (
    DB_FILE_NAME,
    DB_TEMPLATE_NAME,
    INSTALL_MARKER,
    LABEL_STUDIO_VERSION,
    LS_LOCK,
    PREDICTIONS_IMPORT_FLAG,
    cache_root,
    default_ls_venv_dir,
    ensure_db_template,
    ensure_ls_venv,
    label_studio_executable,
    offline_environment,
    requirements_hash,
)

__all__ = [
    "DB_FILE_NAME",
    "DB_TEMPLATE_NAME",
    "DEFAULT_START_TIMEOUT_S",
    "HTTP_TIMEOUT_S",
    "INSTALL_MARKER",
    "LABEL_STUDIO_VERSION",
    "LS_LOCK",
    "MAX_FILES_PER_IMPORT",
    "PREDICTIONS_IMPORT_FLAG",
    "SAMPLING_VALUES",
    "LabelStudioAdmin",
    "LabelStudioError",
    "LabelStudioProcess",
    "build_parser",
    "cache_root",
    "choice_annotation",
    "create_personal_access_token",
    "default_ls_venv_dir",
    "direct_session",
    "ensure_db_template",
    "ensure_ls_venv",
    "free_port",
    "get_legacy_token",
    "jwt_claims",
    "label_studio_executable",
    "login_session",
    "looks_like_jwt",
    "main",
    "offline_environment",
    "port_is_free",
    "requirements_hash",
    "start_label_studio",
    "stop_serve",
]
