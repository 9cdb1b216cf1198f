"""``suite engine start|stop|status`` and ``suite image build|base|list``.

``suite engine start`` reuses a running Docker engine or installs (root with apt) and starts ``dockerd``,
then makes sure the Compose v2 plugin is there; exit 0, and ``--json`` says whether this call started
the engine (so a script stops only what it started: ``suite engine stop``). ``suite image build`` makes
what the docker backend runs where no registry is reachable: the Debian base, the suite image, the
monitoring images.
"""

from __future__ import annotations

import json
import sys

from suite.settings import Settings


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_engine(settings: Settings, args) -> int:
    from suite.containers import debs, engine, images

    data = settings.data_dir
    try:
        if args.engine_action == "start":
            started = engine.start(data, _say)
            if engine.compose_version() is None:
                plugin = debs.install_compose_plugin(images.cache_dir() / "debs")
                _say(f"  Compose v2 plugin installed from Debian's docker-compose: {plugin}")
            v = engine.versions()
            if args.json:
                print(json.dumps({"started": started, "engine": v.engine, "compose": v.compose}))
            else:
                _say(f"docker {v.describe()} ({'started by this call' if started else 'already running'})")
            return 0
        if args.engine_action == "stop":
            stopped = engine.stop(data, _say)
            _say("dockerd stopped" if stopped else "no dockerd started by the suite for this data dir: left alone")
            return 0
        v = engine.versions()
        ours = engine.ours(data)
        if args.json:
            print(json.dumps({"engine": v.engine, "api": v.api, "compose": v.compose, "ok": v.ok, "ours": ours}))
        else:
            _say(f"docker {v.describe()}; minimums engine {'.'.join(map(str, engine.ENGINE_MIN))}, compose "
                 f"{'.'.join(map(str, engine.COMPOSE_MIN))}: {'ok' if v.ok else 'NOT met'}"
                 + (f"; dockerd pid {ours} started by the suite" if ours else ""))
        return 0 if v.ok else 1
    except (engine.EngineError, debs.DebError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_image(settings: Settings, args) -> int:
    from suite.containers import debs, engine, images

    try:
        client = engine.require_client()
        log = settings.log_dir / "image-build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if args.image_action == "base":
            _say(images.ensure_base(client, _say))
        elif args.image_action == "build":
            images.build_suite_image(client, _say, log, force=args.force)
            if not args.no_monitoring:
                for image, version in images.build_monitoring_images(client, _say, log).items():
                    _say(f"  {image}: Debian package {version}")
            for name, why in images.NO_SOURCE.items():
                _say(f"  - {name}: not built ({why})")
        rows = images.summary(client)
        if getattr(args, "json", False):
            print(images.dumps(rows))
        else:
            for row in rows:
                _say(f"{row['image']:<40} {row['id']:<14} {row['mb']:>6} MB  {row['created']}  {row['source']}")
        return 0
    except (engine.EngineError, images.ImageError, debs.DebError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def register(sub) -> None:
    eng = sub.add_parser("engine", help="the Docker engine: start (install, reuse), stop what we started, status")
    eng.add_argument("engine_action", choices=["start", "stop", "status"])
    eng.add_argument("--json", action="store_true")
    eng.set_defaults(func=cmd_engine)
    img = sub.add_parser("image", help="images without a registry: build (base, suite, monitoring), base, list")
    img.add_argument("image_action", choices=["build", "base", "list"], nargs="?", default="list")
    img.add_argument("--force", action="store_true", help="rebuild the suite image even when up to date")
    img.add_argument("--no-monitoring", action="store_true", help="leave out Prometheus and Alertmanager")
    img.add_argument("--json", action="store_true")
    img.set_defaults(func=cmd_image)
