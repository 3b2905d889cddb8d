"""The Jupyter Server extension: REST routes under ``/coiled-jupyter/api/`` for the lab sidebar.

Jupyter Server imports this module (named by ``coiled_jupyter._jupyter_server_extension_points``) when
the extension is enabled; nothing else imports it, so ``%load_ext coiled_jupyter`` never loads Tornado
or Jupyter Server.
"""

from __future__ import annotations

from .handlers import routes

SESSION_DETAIL = "this Jupyter server"


def _load_jupyter_server_extension(server_app) -> None:
    """Register the handlers under the server's base URL; the session they edit is the server's."""
    from .. import session

    session.name_session(SESSION_DETAIL)
    web_app = server_app.web_app
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    server_app.log.info("coiled_jupyter: REST routes under /coiled-jupyter/api/")
