"""The web UI: static files (HTML, ES modules, CSS) served by the API at ``/``.

No build step and no third-party code: the DAG and the timeline are drawn as SVG by the
modules in ``static/``, so the wheel carries everything and works offline.
"""
