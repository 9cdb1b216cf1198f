"""Containers without a registry: the Docker engine, the Compose v2 plugin and the images.

``engine``   find or start ``dockerd`` (installing Debian's ``docker.io`` when root with apt), stop what
             we started, the engine's and Compose's versions through the ``docker`` SDK.
``debs``     Debian packages fetched with apt (bookworm's or the next release's index, signature checked)
             and unpacked with ``dpkg -x``: the Compose plugin, Prometheus, Alertmanager.
``images``   the Debian base image (debootstrap + ``docker import``), the wheelhouse, the suite image
             and the monitoring images, built through the engine API; tarballs and wheels cached beside
             pip's cache dir.
"""
