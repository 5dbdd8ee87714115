"""``sessiondb serve``: the local web viewer (sessiondb/serve/), a thin layer over ``Viewer``."""

from __future__ import annotations

import webbrowser

import click

from .common import console, get_store


@click.command("serve")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    help="Database file (as `sessiondb --db PATH serve`; default: $SESSIONDB_PATH, else the "
    "platform data folder).",
)
@click.option("--port", default=8765, show_default=True, help="Port to listen on (0: any free).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; any but this machine's loopback needs --token.",
)
@click.option(
    "--token",
    envvar="SESSIONDB_SERVE_TOKEN",
    help="Required from browsers (?token=… once, then a cookie); needed to bind a non-loopback "
    "address. Default: $SESSIONDB_SERVE_TOKEN.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the viewer in a browser.")
@click.pass_context
def serve_cmd(
    ctx: click.Context,
    db: str | None,
    port: int,
    host: str,
    token: str | None,
    open_browser: bool,
) -> None:
    """Browse sessions, transcripts (live), search, stats and health in a web browser.

    The store is opened read-only: a missing store is an error and nothing is created. Serves
    until Ctrl-C.
    """
    try:
        from ..serve import Viewer
    except ImportError as e:
        raise click.ClickException(
            f"the viewer needs the serve extra: pip install 'sessiondb[serve]' ({e})"
        ) from None
    from ..serve.server import is_loopback

    if not is_loopback(host) and not token:
        raise click.UsageError(f"--host {host} is reachable from other machines: give --token")
    if db is not None:
        ctx.find_root().ensure_object(dict)["db"] = db
    store = get_store(ctx, readonly=True)
    viewer = Viewer(store, host=host, port=port, token=token)
    httpd = viewer.start()
    console.print(f"sessiondb viewer of {store.location}: {viewer.url}  (Ctrl-C stops)")
    if open_browser:
        webbrowser.open(viewer.url)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        viewer.stop.set()
        viewer.pages.tokens.stop.set()
        httpd.server_close()


COMMANDS = [serve_cmd]
