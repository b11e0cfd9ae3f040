"""The dashboard's static files (HTML, CSS, ES modules), shipped as package data
and served by `bnlab.server.app` from wherever the package is installed."""
