"""Load tests of the gateway with locust: WebSocket and HTTP users, load shapes, delivery checks.

Run ``python -m loadtest.locust.run --help``; see docs/loadtest.md. Only ``run.py`` may be
imported without locust installed: the other modules import locust, which monkey-patches
the standard library with gevent as it is imported.
"""
