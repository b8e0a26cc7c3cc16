"""The web console: one static page, its script and its style, served at ``/console``.

The files sit beside this module and ship with the package (``package_data`` takes
``*.html``, ``*.js`` and ``*.css``), so the console needs no internet access and no
build step. The page holds no data and is public, like ``/docs``; every figure it
shows comes from the script's calls to the same ``/v1`` routes, with the same
token header, roles and cross-site checks as any other client. The assets are a
fixed list rather than a static route on this directory, which would serve this
module's source too. The page's Content-Security-Policy lets it load and call its
own origin only, so a function's output can neither run code nor send data away.
"""

from __future__ import annotations

from pathlib import Path

import falcon

CONSOLE_DIR = Path(__file__).resolve().parent
ASSETS = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _read(name: str, directory: Path) -> bytes:
    return (directory / name).read_bytes()


class ConsolePageResource:
    """``/console``: the single page; its hash routes (``#/functions/ID``) are the script's."""

    def __init__(self, directory: Path = CONSOLE_DIR) -> None:
        self._page = _read("index.html", directory)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", POLICY)
        resp.set_header("Cache-Control", "no-cache")
        resp.data = self._page


class ConsoleAssetResource:
    """``/console/{asset}``: the page's script and style sheet, and nothing else."""

    def __init__(self, directory: Path = CONSOLE_DIR) -> None:
        self._assets = {name: (kind, _read(name, directory)) for name, kind in ASSETS.items()}

    def on_get(self, req: falcon.Request, resp: falcon.Response, asset: str) -> None:
        if asset not in self._assets:
            raise falcon.HTTPNotFound(
                description=f"the console has no asset {asset!r}; open /console"
            )
        kind, data = self._assets[asset]
        resp.content_type = kind
        resp.set_header("Cache-Control", "no-cache")
        resp.data = data
