"""The dashboard in a real browser (Debian's chromium, headless): the page's own script polls
the progress endpoint and the bar of the running phase advances without a reload. Skipped where
no chromium is installed (``apt-get install chromium``)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from flask import request

from backend import training_state
from backend.app import create_app
from backend.settings import Settings

pytestmark = pytest.mark.redis
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
PROJECT = 8


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed")
def test_the_progress_bar_advances_in_a_browser(redis_server, redis_conn, tmp_path, serve_wsgi):
    settings = Settings.from_env({"REDIS_URL": redis_server, "MODEL_DIR": str(tmp_path / "m"),
                                  "QUEUE_NAME": "browser-test"})
    redis_conn.sadd(training_state.projects_key(), PROJECT)
    assert training_state.RunLock(redis_conn, PROJECT, "train-p8-browser").acquire()
    training_state.update_status(redis_conn, PROJECT, state="running", phase="training",
                                 started_at=training_state.now_iso(),
                                 training_progress={"step": 30, "steps": 300})
    app = create_app(settings, redis_conn=redis_conn)
    polls: list[str] = []

    @app.after_request
    def advance(response):   # the round goes on once the page has polled: the next poll sees it
        if request.path.endswith("/progress.json"):
            polls.append(request.path)
            if len(polls) == 1:
                training_state.update_status(redis_conn, PROJECT,
                                             training_progress={"step": 240, "steps": 300})
        return response

    server = serve_wsgi(app)
    dom = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
         "--dump-dom", f"{server.url}/dashboard"],
        capture_output=True, text=True, timeout=120).stdout
    assert "Training the model" in dom
    assert "240 of 300 steps" in dom and 'style="width:80.0%"' in dom   # updated by the poll
    assert "30 of 300 steps" not in dom
    assert len(polls) >= 2
