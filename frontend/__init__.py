"""The dashboard's static files (HTML, CSS, ES modules), shipped as package data
and served by `bnlab.server.web.app` from wherever the package is installed."""
