"""The palette's Screenshot, saved where it can be: Textual delivers it to ~/Downloads, which a server usually lacks
("Failed to save screenshot"). qdeck saves to the downloads directory when it exists, else the current directory,
and says exactly where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from platformdirs import user_downloads_path
from textual.app import App

from console.safe_text import safe


def screenshot_dir() -> Path:
    """The user's downloads directory ($XDG_DOWNLOAD_DIR, ~/Downloads) when it exists, else the current one."""
    downloads = user_downloads_path()
    return downloads if downloads.is_dir() else Path.cwd()


def save_screenshot(app: App[Any], filename: str | None = None, path: str | None = None,
                    time_format: str | None = None) -> Path | None:
    """Write the SVG and notify the full path (or why it failed); the saved path, or None."""
    directory = Path(path).expanduser() if path else screenshot_dir()
    try:
        saved = Path(app.save_screenshot(filename, str(directory), time_format)).resolve()
    except OSError as exc:
        app.notify(f"could not save the screenshot in {safe(str(directory), 300)}: {safe(exc.strerror or exc, 200)}",
                   title="Screenshot", severity="error", markup=False)
        return None
    app.notify(f"saved to {safe(str(saved), 300)}", title="Screenshot", markup=False)
    return saved
