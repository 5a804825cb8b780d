"""Print the README's settings table from backend.settings (the one source of truth).

    scripts/python.sh scripts/settings_table.py
"""
import dataclasses

from backend.settings import Settings


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
