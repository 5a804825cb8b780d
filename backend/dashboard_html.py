"""The dashboard's HTML, rendered on the server from ``backend.dashboard_data``'s plain values.

Every value is escaped (task labels and errors come from users); the one script is inline,
small, and only polls the progress endpoint and sends the "make live" action. No external
resource is referenced, so the page works offline.
"""

from __future__ import annotations

from html import escape

from backend.dashboard_plot import learning_curve_svg

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px;color:#1f2328}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#656d76}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eaeef2;padding:4px 6px;text-align:left;vertical-align:top}
.bar{background:#eaeef2;border-radius:4px;height:12px;width:220px;display:inline-block;
 vertical-align:middle;overflow:hidden}.bar span{display:block;height:100%;background:#1f6feb}
.bar.passed span{background:#8c959f}.bar.unknown span{width:30%;background:#54aeff;
 animation:slide 1.2s infinite alternate}@keyframes slide{from{margin-left:0}to{margin-left:70%}}
.phase-now{font-weight:600}.problem{border-left:4px solid #cf222e;background:#fff5f5;
 padding:6px 10px;margin:8px 0}.todo{color:#1a7f37}.live{color:#1a7f37;font-weight:600}
button{cursor:pointer}img.thumb{max-width:96px;max-height:96px}.notice{background:#ddf4ff;padding:6px 10px}
"""
SCRIPT = """
(function(){
  var url = document.body.getAttribute('data-progress-url');
  function poll(){
    fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
    .then(function(r){ return r.json(); }).then(function(data){
      Object.keys(data.projects || {}).forEach(function(id){
        var box = document.getElementById('round-' + id), p = data.projects[id];
        if (!box) { return; }
        if (box.getAttribute('data-running') === '1' && !p.running) { location.reload(); }
        box.setAttribute('data-running', p.running ? '1' : '0');
        box.innerHTML = p.html;
      });
    }).catch(function(){}).then(function(){ setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
  document.querySelectorAll('form.make-live').forEach(function(form){
    form.addEventListener('submit', function(event){
      event.preventDefault();
      if (!confirm('Make ' + form.getAttribute('data-version') + ' the live version?')) return;
      fetch(form.action, {method: 'POST', credentials: 'same-origin',
                          headers: {'X-Requested-With': 'dashboard'}})
      .then(function(r){ return r.json(); })
      .then(function(d){ alert(d.message || d.error); location.reload(); });
    });
  });
})();
"""


def seconds(value) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    value = float(value)
    if value < 90:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(round(value)), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def percent(value) -> str:
    return f"{float(value) * 100:.1f}%" if isinstance(value, (int, float)) else "–"


def number(value, digits: int = 2) -> str:
    return f"{float(value):.{digits}f}" if isinstance(value, (int, float)) else "–"


def bar_html(bar: dict) -> str:
    fraction = bar.get("fraction")
    if bar["state"] == "now" and fraction is None:
        inner, cls = "<span></span>", "bar unknown"
    else:
        inner = f'<span style="width:{round((fraction or 0) * 100, 1)}%"></span>'
        cls = "bar passed" if bar["state"] == "passed" else "bar"
    text = escape(bar.get("text") or "")
    if bar["state"] == "now" and bar.get("left_s") is not None:
        text += f", about {seconds(bar['left_s'])} left"
    row_class = ' class="phase-now"' if bar["state"] == "now" else ""
    return (
        f'<tr{row_class} data-phase="{escape(bar["phase"])}"><td>{escape(bar["words"])}</td>'
        f'<td><span class="{cls}">{inner}</span></td><td>{escape(bar["state"])}'
        f"{' · ' + text if text else ''}</td></tr>"
    )


def round_html(view: dict) -> str:
    """The round in progress (what the page's script replaces while it polls)."""
    running = view.get("running")
    if not running:
        waiting = []
        if view.get("queued_job_id"):
            waiting.append("a round is queued and starts when a worker is free")
        due = view.get("next_automatic_round")
        if isinstance(due, dict):
            waiting.append(f"an automatic round starts at {escape(str(due.get('due_at')))}")
        rest = "; ".join(waiting) or "press Start Training in Label Studio to start one"
        return f'<p class="muted">No round is running ({rest}).</p>'
    head = (
        f'<p><b class="phase">{escape(running["words"])}</b> · running for '
        f"{seconds(running.get('elapsed_s'))}"
    )
    last, elapsed = running.get("last_round_s"), running.get("elapsed_s")
    if isinstance(last, (int, float)) and last > 0:
        head += f" (the last round took {seconds(last)}"
        if isinstance(elapsed, (int, float)):
            head += (
                f": about {seconds(last - elapsed)} left if this one takes as long)"
                if last > elapsed
                else ": this one takes longer)"
            )
        else:
            head += ")"
    if running.get("version_in_progress"):
        head += f" · version {escape(str(running['version_in_progress']))}"
    head += "</p>"
    rows = "".join(bar_html(bar) for bar in running["bars"])
    return head + f'<table class="phases">{rows}</table>'


def problems_html(view: dict) -> str:
    if not view["problems"]:
        return '<p class="muted">No problem to report.</p>'
    return "".join(
        f'<div class="problem"><b>{escape(p["title"])}</b><br>{escape(p["detail"])}'
        f'<br><span class="todo">What to do: {escape(p["todo"])}</span></div>'
        for p in view["problems"]
    )


def timings_text(timings: dict) -> str:
    shown = [
        (key[:-2].replace("_", " "), value)
        for key, value in timings.items()
        if key.endswith("_s") and key != "total_s"
    ]
    return ", ".join(f"{escape(name)} {number(value, 1)}" for name, value in shown) or "–"


def history_html(view: dict) -> str:
    if not view["history"]:
        return '<p class="muted">No round has finished since the history was kept.</p>'
    rows = []
    for entry in view["history"]:
        metrics = entry.get("metrics") or {}
        timings = entry.get("timings_s") or {}
        outcome = escape(str(entry.get("state")))
        if entry.get("error"):
            outcome += f": {escape(str(entry['error'])[:200])}"
        elif entry.get("reason"):
            outcome += f": {escape(str(entry['reason'])[:200])}"
        rows.append(
            f"<tr><td>{escape(str(entry.get('finished_at') or ''))}</td>"
            f"<td>{escape(str(entry.get('model_version') or '–'))}</td><td>{outcome}</td>"
            f"<td>{escape(str(entry.get('annotations_used', '–')))}</td>"
            f"<td>{escape(str(metrics.get('mode') or '–'))}</td>"
            f"<td>{seconds(timings.get('total_s', entry.get('duration_s')))}</td>"
            f"<td>{timings_text(timings)}</td></tr>"
        )
    return (
        '<table class="history"><tr><th>finished</th><th>version</th><th>outcome</th>'
        "<th>labels</th><th>mode</th><th>total</th><th>seconds per phase</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def version_action(row: dict, action_url: str) -> str:
    if row["live"]:
        return '<span class="live">live</span>'
    if row["refusal"]:
        return f'<span class="muted">{escape(row["refusal"])}</span>'
    return (
        f'<form class="make-live" method="post" action="{escape(action_url)}" '
        f'data-version="{escape(row["version"])}"><button type="submit">make this version '
        f"live</button></form>"
    )


def prospective_html(measured: dict | None, live: bool = False) -> str:
    """A version's prospective accuracy in words (``dashboard_data.prospective_by_version``);
    the live version's is measured by the next round, a version without one has none."""
    if not measured:
        return '<span class="muted">measured at the next round</span>' if live else "–"
    if not measured.get("tasks"):
        return '<span class="muted">no task annotated since</span>'
    text = (
        f'<span class="prospective">{percent(measured["accuracy"])}</span> of {int(measured["tasks"])} tasks'
    )
    if measured.get("preselected"):
        text += (
            f'<br><span class="muted">pre-selected on {int(measured["preselected"])}: '
            f"{percent(measured.get('preselected_accuracy'))} kept</span>"
        )
    return text


PROSPECTIVE_NOTE = (
    '<p class="muted">Prospective accuracy: of the tasks annotated after a version was trained '
    "(counted when the next round collects the labels), how often its guess, the answer "
    "pre-selected for the annotator, was the annotator's label. These tasks were served first "
    "because the model found them the hardest, so this figure is pessimistic: the model does "
    "better on the tasks left.</p>"
)


def versions_html(view: dict, action_url) -> str:
    if not view["versions"]:
        return '<p class="muted">No version yet.</p>'
    rows = []
    for row in view["versions"]:
        accuracy = percent(row["accuracy"])
        if row.get("accuracy_std") is not None and row["accuracy"] is not None:
            accuracy += f" ± {float(row['accuracy_std']) * 100:.1f}"
        if row["accuracy_kind"]:
            accuracy += f' <span class="muted">({escape(row["accuracy_kind"])})</span>'
        rows.append(
            f'<tr data-version="{escape(row["version"])}"><td>{escape(row["version"])}</td>'
            f"<td>{escape(str(row['finished_at'] or '–'))}</td>"
            f"<td>{escape(str(row['labels'] if row['labels'] is not None else '–'))}</td>"
            f"<td>{escape(str(row['mode'] or '–'))}</td><td>{accuracy}</td>"
            f"<td>{prospective_html(row['prospective'], row['live'] and not row['cold_start'])}"
            "</td>"
            f"<td>{percent(row['train_acc'])}</td><td>{number(row['lpm_spearman'])}</td>"
            f"<td>{version_action(row, action_url(row['version']))}</td></tr>"
        )
    return (
        '<table class="versions"><tr><th>version</th><th>finished</th><th>labels</th>'
        "<th>mode</th><th>accuracy estimate</th><th>prospective accuracy</th>"
        "<th>train accuracy</th>"
        "<th>loss module vs true loss (Spearman)</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        + PROSPECTIVE_NOTE
    )


def top_tasks_html(view: dict, links: dict) -> str:
    if not view["top_tasks"]:
        return '<p class="muted">No ranking is live yet.</p>'
    rows = "".join(
        f'<tr><td><img class="thumb" src="{escape(links["thumbnail"](t["task_id"]))}" alt="" '
        f'loading="lazy"></td>'
        f'<td><a href="{escape(links["task"](t["task_id"]))}">task {t["task_id"]}</a></td>'
        f"<td>{number(t['score'], 4)}</td><td>{escape(str(t['label'] or '–'))}</td>"
        f"<td>{percent(t['probability'])}</td></tr>"
        for t in view["top_tasks"]
    )
    return (
        '<table class="top-tasks"><tr><th></th><th>task</th><th>score (0 = first)</th>'
        "<th>the model's guess</th><th>its probability</th></tr>" + rows + "</table>"
    )


def rollback_html(view: dict) -> str:
    rolled = view.get("rollback")
    if not isinstance(rolled, dict):
        return ""
    text = f"Making {rolled.get('version')} live: {rolled.get('state')}"
    if rolled.get("phase"):
        text += f" ({rolled['phase']})"
    if rolled.get("predictions_pushed") is not None:
        text += f", {rolled['predictions_pushed']} predictions pushed"
    return f'<p class="notice">{escape(text)}</p>'


def project_html(view: dict, links: dict) -> str:
    pid = view["project_id"]
    live = escape(str(view["live_version"] or "none yet"))
    return (
        f'<section id="project-{pid}"><h2>Project {pid}</h2>'
        f'<p>Live version: <b class="live-version">{live}</b>'
        f"{' · published ' + escape(view['published_at']) if view['published_at'] else ''}"
        f" · annotation changes since the last round: {escape(str(view['pending_changes']))}</p>"
        f"{rollback_html(view)}<h3>Round in progress</h3>"
        f'<div id="round-{pid}" data-running="{1 if view["running"] else 0}">'
        f"{round_html(view)}</div><h3>Errors</h3>{problems_html(view)}"
        f"<h3>Learning curve</h3>{learning_curve_svg(view['curve'])}"
        '<p class="muted">Accuracy estimate: cross-validated over the labels (k folds, ± one '
        "standard deviation over the folds, the bars of the plot): the model's recipe where the "
        "round searched one, else a linear classifier on the backbone's features (the colour "
        "choice); a held-out part of the labels where the trainer kept one. Train accuracy is "
        "measured on the training labels themselves (optimistic).</p>"
        f"<h3>Versions</h3>{versions_html(view, links['make_live'])}"
        f"<h3>What annotators get next</h3>{top_tasks_html(view, links)}"
        f"<h3>History of rounds</h3>{history_html(view)}</section>"
    )


def page_html(views: list[dict], links_for, progress_url: str, nonce: str, notices: list[str]) -> str:
    body = (
        "".join(project_html(view, links_for(view["project_id"])) for view in views)
        or '<p class="muted">No project has connected yet: connect this backend in a Label Studio '
        "project's Model settings.</p>"
    )
    notes = "".join(f'<p class="notice">{escape(n)}</p>' for n in notices)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Active learning backend</title><style>{STYLE}</style></head>"
        f'<body data-progress-url="{escape(progress_url)}"><h1>Active learning backend</h1>'
        f'{notes}{body}<script nonce="{nonce}">{SCRIPT}</script></body></html>'
    )
