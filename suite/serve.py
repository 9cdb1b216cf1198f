"""Run one service in this process: ``python -m suite.serve NAME [--settings-file F]``.

The supervisor starts each service this way; the settings file carries the parent's exact settings.
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from suite import services, tls
from suite.auth import startup as auth_startup
from suite.auth.db import private_dir
from suite.settings import Settings
from suite.web.logs import configure_json_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m suite.serve")
    parser.add_argument("service", choices=list(services.BY_NAME))
    parser.add_argument("--settings-file", default=os.environ.get("SUITE_SETTINGS_FILE"))
    args = parser.parse_args(argv)
    settings = Settings.from_file(args.settings_file) if args.settings_file else Settings()
    configure_json_logging(args.service, settings.log_level)
    auth_startup.check(settings)  # no open service beyond loopback, however it was started
    os.umask(0o077)  # every file a service creates (stores, backups, vector data) is 0600, folders 0700
    private_dir(settings.data_dir)
    logging.getLogger(__name__).info(auth_startup.notice(settings))
    spec = services.get(args.service)
    logging.getLogger(__name__).info("starting %s on %s:%d", spec.name, settings.host, settings.port(spec.name))
    for name, value in (spec.env(settings) if spec.env else {}).items():  # before the factory's import
        os.environ.setdefault(name, value)
    ssl_options = tls.uvicorn_options(settings, spec.name)  # before the model loads: a missing file fails fast
    app = spec.load_factory()(settings, **spec.kwargs)
    uvicorn.run(app, host=settings.host, port=settings.port(spec.name), log_config=None,
                timeout_graceful_shutdown=5, **ssl_options)


if __name__ == "__main__":
    main()
