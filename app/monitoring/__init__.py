"""Watching the stack: Prometheus metrics, the uWSGI stats made safe to show, JSON logs.

It reads the web layer's and the job layer's measurements and uWSGI's stats server; neither
layer depends on it.
"""
