"""A headless Debian chromium driven over the DevTools protocol on a pipe (``--remote-debugging-
pipe``: JSON messages ended by a NUL byte, the browser reading fd 3 and writing fd 4), enough for
a test to open a page, click in it, accept its dialogs and read the DOM; no library needed.
Dialogs (confirm, alert) are accepted as they open and their messages kept in ``dialogs``."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
import time

BINARY = shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    def __init__(self, profile_dir, binary: str | None = BINARY):
        if binary is None:
            raise RuntimeError("no chromium installed")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # above the low fds, so moving them to 3 and 4 in the child overwrites neither
        sources = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)

        def pipes_at_3_and_4():
            os.dup2(sources[0], 3)
            os.dup2(sources[1], 4)

        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile_dir}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=pipes_at_3_and_4,
        )
        for fd in sources:
            os.close(fd)
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self._events: list[dict] = []
        self._changed = threading.Condition()
        self._write_lock = threading.Lock()
        self.dialogs: list[str] = []
        self.session: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    # ------------------------------------------------------------------ the protocol
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        with self._write_lock:
            self._next_id += 1
            message: dict = {"id": self._next_id, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
            return self._next_id

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._receive(json.loads(raw))

    def _receive(self, message: dict) -> None:
        if message.get("method") == "Page.javascriptDialogOpening":
            self.dialogs.append(message["params"].get("message", ""))
            self._send("Page.handleJavaScriptDialog", {"accept": True}, message.get("sessionId"))
        with self._changed:
            if "id" in message:
                self._answers[message["id"]] = message
            else:
                self._events.append(message)
            self._changed.notify_all()

    def call(
        self, method: str, params: dict | None = None, timeout_s: float = 30.0, session: str | None = None
    ) -> dict:
        """Send a command (to the page's session unless told) and return its result."""
        sent = self._send(method, params, session if session is not None else self.session)
        with self._changed:
            if not self._changed.wait_for(lambda: sent in self._answers, timeout_s):
                raise TimeoutError(f"{method}: no answer in {timeout_s} s")
            answer = self._answers.pop(sent)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def wait_for_event(self, method: str, after: int = 0, timeout_s: float = 30.0) -> int:
        """Wait until the ``after``-th event or a later one is ``method``; its index."""

        def found() -> int | None:
            return next(
                (i for i, e in enumerate(self._events) if i >= after and e.get("method") == method), None
            )

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout_s):
                raise TimeoutError(f"no {method} in {timeout_s} s")
            return int(found())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ what tests use
    def open(self, url: str, timeout_s: float = 30.0) -> None:
        """Open ``url`` in a new tab (the tab the other calls then act on) and wait for its load."""
        if self.session is None:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session="")
            self.session = self.call(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=""
            )["sessionId"]
            self.call("Page.enable")
        self.navigate(url, timeout_s)

    def navigate(self, url: str, timeout_s: float = 30.0) -> None:
        seen = len(self._events)
        self.call("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired", seen, timeout_s)

    def evaluate(self, expression: str, timeout_s: float = 30.0):
        """The value of a JavaScript expression in the page."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout_s,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout_s: float = 30.0):
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is between two documents
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} still false after {timeout_s} s")
            time.sleep(0.2)

    def close(self) -> None:
        try:
            self.call("Browser.close", session="", timeout_s=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
