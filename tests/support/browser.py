"""Debian's chromium driven by Playwright, for the web UI's tests; screenshots; axe-core."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking"]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
ROOT = Path(__file__).resolve().parents[2]
#: where the tests write screenshots for a reviewer (gitignored under var/)
SCREENSHOTS = Path(os.environ.get("DOCKYARD_UI_SCREENSHOTS", ROOT / "var" / "ui-screenshots"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def screenshot(page: Any, name: str, *, dark: bool = False) -> None:
    """The page at desktop and phone widths, full length, as `<name>-desktop.png` and
    `<name>-phone.png` (`-dark-` ones in dark mode); the viewport is put back."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ("-dark" if dark else "")
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.screenshot(path=str(SCREENSHOTS / f"{safe}-{label}.png"), full_page=True)
    if size:
        page.set_viewport_size(size)


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")
                   ) -> list[dict[str, Any]]:
    """axe-core's violations of the given impacts on the current page (the page's
    context must bypass CSP, which forbids injected scripts)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => (await axe.run(document)).violations")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result if v["impact"] in impacts]
