"""The launcher behind ``python -m app.serve``: one module per concern.

``cli`` holds the commands; ``supervise`` runs uWSGI and nginx in the foreground; ``master``
builds the uWSGI command line and environment; ``nginx`` finds nginx and renders its native
configuration; ``probe`` speaks the uwsgi protocol to uWSGI's socket (start-up wait, health
check); ``fifo`` writes to the master FIFO; ``lock``, ``ports`` and ``private`` are the checks
made before anything starts (one stack per directory, free ports, private files);
``settings_docs`` generates the settings' tables for the README and docker-compose.yml.
"""
