"""The learning curve as inline SVG, drawn on the server (no script, no library, works offline):
labels used against the accuracy estimate, one point per trained version."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 560, 250
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 14, 40  # margins around the plot area, in px
HELD_OUT_COLOUR, TRAIN_COLOUR = "#1f6feb", "#8b949e"


def _scale(value: float, low: float, high: float, start: float, end: float) -> float:
    if high <= low:
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


def _ticks(values: list[int], most: int = 8) -> list[int]:
    ordered = sorted(set(values))
    if len(ordered) <= most:
        return ordered
    step = (len(ordered) - 1) / (most - 1)
    return sorted({ordered[round(i * step)] for i in range(most)})


def learning_curve_svg(points: list[dict]) -> str:
    """``points``: dicts with ``labels``, ``accuracy`` (held-out or cross-validated, or None),
    ``train_acc`` (or None) and ``version``, oldest first."""
    usable = [p for p in points if p.get("accuracy") is not None or p.get("train_acc") is not None]
    if not usable:
        return (
            '<p class="muted">No trained version yet: the curve starts with the first '
            "round that trains a model.</p>"
        )
    xs = [int(p["labels"]) for p in usable]
    low, high = min(xs), max(xs)
    if low == high:
        low, high = low - 1, high + 1

    def x(value: float) -> float:
        return round(_scale(value, low, high, LEFT, WIDTH - RIGHT), 1)

    def y(value: float) -> float:
        return round(_scale(value, 0.0, 1.0, HEIGHT - BOTTOM, TOP), 1)

    parts = [
        f'<svg class="curve" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        "<title>Learning curve: accuracy against labels used</title>",
    ]
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(level)}" y2="{y(level)}" '
            f'stroke="#d0d7de" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(level) + 4}" text-anchor="end" '
            f'font-size="11">{round(level * 100)}%</text>'
        )
    for tick in _ticks(xs):
        parts.append(
            f'<text x="{x(tick)}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11">{tick}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'font-size="12">labels used</text>'
    )
    parts.extend(_series(usable, "train_acc", x, y, TRAIN_COLOUR, "train accuracy", hollow=True))
    parts.extend(_error_bars(usable, x, y))
    parts.extend(_series(usable, "accuracy", x, y, HELD_OUT_COLOUR, "accuracy estimate", hollow=False))
    parts.extend(_legend())
    parts.append("</svg>")
    return "".join(parts)


def _series(points: list[dict], key: str, x, y, colour: str, name: str, hollow: bool) -> list[str]:
    """One series: a line through its points and a marker (with a tooltip) per point."""
    shown = [p for p in points if p.get(key) is not None]
    if not shown:
        return []
    coords = " ".join(f"{x(p['labels'])},{y(float(p[key]))}" for p in shown)
    dash = ' stroke-dasharray="4 3"' if hollow else ""
    out = [
        f'<polyline class="series-{escape(key)}" points="{coords}" fill="none" '
        f'stroke="{colour}" stroke-width="2"{dash}/>'
    ]
    for p in shown:
        fill = "white" if hollow else colour
        tip = f"{p.get('version')}: {p['labels']} labels, {name} {float(p[key]) * 100:.1f}%"
        if key == "accuracy" and isinstance(p.get("accuracy_std"), (int, float)):
            tip += f" ± {float(p['accuracy_std']) * 100:.1f}"
        out.append(
            f'<circle class="point-{escape(key)}" cx="{x(p["labels"])}" '
            f'cy="{y(float(p[key]))}" r="4" fill="{fill}" stroke="{colour}" '
            f'stroke-width="2"><title>{escape(tip)}</title></circle>'
        )
    return out


def _error_bars(points: list[dict], x, y) -> list[str]:
    """The accuracy estimate's spread: a vertical bar from mean - std to mean + std (clipped to
    0..100%) with caps, per point whose estimate has one."""
    out = []
    for p in points:
        if p.get("accuracy") is None or not isinstance(p.get("accuracy_std"), (int, float)):
            continue
        mean, std = float(p["accuracy"]), float(p["accuracy_std"])
        low, high = y(max(0.0, mean - std)), y(min(1.0, mean + std))
        cx = x(p["labels"])
        out.append(
            f'<path class="spread-accuracy" d="M{cx},{low}V{high}M{cx - 4},{low}'
            f'H{cx + 4}M{cx - 4},{high}H{cx + 4}" stroke="{HELD_OUT_COLOUR}" '
            f'stroke-width="1.5" fill="none"><title>{escape(str(p.get("version")))}: '
            f"± {std * 100:.1f} points over the folds</title></path>"
        )
    return out


def _legend() -> list[str]:
    """Which line is which, in the plot's top left corner."""
    out = []
    names = (
        (HELD_OUT_COLOUR, "accuracy estimate (bars: ± 1 std over the folds)", False),
        (TRAIN_COLOUR, "train accuracy", True),
    )
    for row, (colour, name, hollow) in enumerate(names):
        top = TOP + 8 + row * 16
        dash = ' stroke-dasharray="4 3"' if hollow else ""
        out.append(
            f'<line x1="{LEFT + 10}" x2="{LEFT + 34}" y1="{top}" y2="{top}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{LEFT + 40}" y="{top + 4}" font-size="11">{name}</text>')
    return out
