"""``make bench``: this stack measured beside gunicorn, bare uWSGI and the job queues people
choose instead, in one run on this machine (``python -m bench [--quick]``).

One module per table (``http``, ``threads``, ``jobs``, ``memory``); ``procs`` starts and always
stops the servers, ``load`` drives them, ``report`` writes ``bench/results``.
"""
