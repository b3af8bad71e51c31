"""Visual Turing test of real vs synthetic fundus photographs.

Modules: ``app`` (FastAPI server: admin API, reader API and pages), ``db`` (schema and queries),
``study`` (building a study from two image folders), ``reencode`` (uniform, metadata-free PNG copies),
``cli`` (``retina-fast turing ...``); ``analyze``/``simulate`` work on the exported answers.

Workflow::

    retina-fast turing create-study --db sqlite:///turing.db --real REAL/ --synthetic SYN/ \\
        --readers 40 --seed 1 --base-url http://HOST:8000        # prints one link per reader
    RETINA_FAST_ADMIN_TOKEN=... retina-fast turing serve --db sqlite:///turing.db --host 0.0.0.0
    # readers open their links; progress and CSV/JSON export at http://HOST:8000/admin
    retina-fast turing analyze export.csv --out results/

Serve over TLS (a reverse proxy) outside a trusted network: the admin token and reader links
travel in the clear otherwise.
"""
