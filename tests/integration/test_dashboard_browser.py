"""The dashboard in a real browser (Debian's chromium, headless): the page's own script polls
the progress endpoint and the bar of the running phase advances without a reload; a click on
"make this version live" makes the older version live again in a real Label Studio. Skipped
where no chromium is installed (``apt-get install chromium``)."""

from __future__ import annotations

import secrets
import shutil
import subprocess

import pytest
from flask import request
from rq import SimpleWorker

from backend import queueing, training_state
from backend.app import create_app
from backend.ls_client import LabelStudioClient
from backend.model_store import ModelStore
from backend.settings import Settings
from tests.chromium import Chromium
from tests.integration.test_rollback_label_studio import CONFIG, NEWER, OLDER, publish_version

pytestmark = pytest.mark.redis
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
PROJECT = 8


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed")
def test_the_progress_bar_advances_in_a_browser(redis_server, redis_conn, tmp_path, serve_wsgi):
    settings = Settings.from_env(
        {"REDIS_URL": redis_server, "MODEL_DIR": str(tmp_path / "m"), "QUEUE_NAME": "browser-test"}
    )
    redis_conn.sadd(training_state.projects_key(), PROJECT)
    assert training_state.RunLock(redis_conn, PROJECT, "train-p8-browser").acquire()
    training_state.update_status(
        redis_conn,
        PROJECT,
        state="running",
        phase="training",
        started_at=training_state.now_iso(),
        training_progress={"step": 30, "steps": 300},
    )
    app = create_app(settings, redis_conn=redis_conn)
    polls: list[str] = []

    @app.after_request
    def advance(response):  # the round goes on once the page has polled: the next poll sees it
        if request.path.endswith("/progress.json"):
            polls.append(request.path)
            if len(polls) == 1:
                training_state.update_status(
                    redis_conn, PROJECT, training_progress={"step": 240, "steps": 300}
                )
        return response

    server = serve_wsgi(app)
    dom = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=8000",
            "--dump-dom",
            f"{server.url}/dashboard",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "Training the model" in dom
    assert "240 of 300 steps" in dom and 'style="width:80.0%"' in dom  # updated by the poll
    assert "30 of 300 steps" not in dom
    assert len(polls) >= 2


@pytest.mark.labelstudio
@pytest.mark.skipif(BROWSER is None, reason="no chromium installed")
def test_a_click_makes_the_older_version_live_in_label_studio(
    label_studio, pat, admin, redis_server, redis_conn, tmp_path, serve_wsgi, monkeypatch
):
    project_id = admin.create_project(f"dashboard rollback {secrets.token_hex(3)}", CONFIG)["id"]
    ids = sorted(admin.import_tasks(project_id, [{"data": {"image": f"/x/{i}.png"}} for i in range(6)]))
    # the job reads its settings from the environment, as a worker does
    for name, value in {
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": pat,
        "REDIS_URL": redis_server,
        "QUEUE_NAME": "browser-rollback",
        "MODEL_DIR": str(tmp_path / "models"),
        "SET_UNCERTAINTY_SAMPLING": "true",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    client = LabelStudioClient.from_settings(settings)
    store = ModelStore(settings.model_dir, settings.keep_model_versions)
    publish_version(settings, client, store, project_id, OLDER, ids)  # first id first
    publish_version(settings, client, store, project_id, NEWER, ids[::-1])  # last id first
    admin.set_sampling(project_id, "Uncertainty sampling")
    assert admin.get_project(project_id)["model_version"] == NEWER
    redis_conn.sadd(training_state.projects_key(), project_id)
    server = serve_wsgi(create_app(settings, redis_conn=redis_conn))
    live = f"document.querySelector('#project-{project_id} .live-version').textContent"
    button = (
        f"document.querySelector('#project-{project_id} tr[data-version=\"{OLDER}\"] form.make-live button')"
    )

    with Chromium(tmp_path / "profile") as browser:
        browser.open(f"{server.url}/dashboard")
        assert browser.evaluate(live) == NEWER
        browser.evaluate(f"{button}.click()")  # confirm, then the answer's alert: accepted
        # the page reloads once the action is queued, and says so
        browser.wait_until(f"!!document.querySelector('#project-{project_id} .notice')")
        assert browser.dialogs[0] == f"Make {OLDER} the live version?"
        assert browser.dialogs[1].startswith(f"{OLDER} will be live once")
        SimpleWorker([queueing.training_queue(settings, redis_conn)], connection=redis_conn).work(burst=True)
        browser.navigate(f"{server.url}/dashboard")
        assert browser.evaluate(live) == OLDER
        assert browser.evaluate(
            f"!!document.querySelector('#project-{project_id} tr[data-version=\"{NEWER}\"] form.make-live')"
        )
        assert "predictions pushed" in browser.evaluate(
            f"document.querySelector('#project-{project_id} .notice').textContent"
        )

    assert admin.get_project(project_id)["model_version"] == OLDER
    assert store.published(project_id).version == OLDER
    assert admin.next_task(project_id)["id"] == ids[0]  # the tab's order is the older one's
