"""Print the README's settings table from backend.settings (the one source of truth)."""
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend.settings import Settings  # noqa: E402


def main() -> None:
    print("| variable | default | unit | meaning |")
    print("|---|---|---|---|")
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default) or "(none)"
        elif default in (None, ""):
            default = "(none)"
        doc = f.metadata["doc"].replace("|", "\\|")
        print(f"| `{f.name.upper()}` | `{default}` | {f.metadata.get('unit', '')} | {doc} |")


if __name__ == "__main__":
    main()
