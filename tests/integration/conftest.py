"""Fixtures shared by the integration tests that run a real Label Studio: one server per test
module (module scope), its admin's personal access token, and an admin client."""

from __future__ import annotations

import pytest

from scripts.lib import lslocal
from tests.conftest import free_port

LS_ADMIN_EMAIL, LS_ADMIN_PASSWORD = "admin@example.com", "integration-Passw0rd"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    server = lslocal.start_label_studio(
        lslocal.ensure_ls_venv(),
        tmp_path_factory.mktemp("label-studio"),
        free_port(),
        LS_ADMIN_EMAIL,
        LS_ADMIN_PASSWORD,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pat(label_studio):
    return lslocal.create_personal_access_token(label_studio.url, LS_ADMIN_EMAIL, LS_ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def admin(label_studio, pat):
    return lslocal.LabelStudioAdmin(label_studio.url, pat)
