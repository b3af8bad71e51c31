"""Visual Turing test of real vs synthetic fundus photographs.

Modules: ``app`` (FastAPI server: one router per resource, reader API, admin studies, admin export,
pages), ``db`` (schema and every query), ``study`` (building a study from two image folders),
``reencode`` (uniform, metadata-free PNG copies), ``constants`` (export columns, specialties, groupings,
metrics: shared by the server and the analysis), ``cli`` (``retina-fast turing ...``, all three
sub-commands). On the exported answers: ``analyze`` (the entry point, in order: ``export`` reads and
checks the file, ``groups`` groups the readers, ``summary`` computes per-reader and per-group metrics,
``gee`` fits the models, ``tables`` writes Markdown; the figure is ``retina_fast.report.turing_figure``)
and ``simulate`` (reader panels with planted effects).

Workflow::

    retina-fast turing create-study --db sqlite:///turing.db --real REAL/ --synthetic SYN/ \\
        --readers 40 --seed 1 --base-url http://HOST:8000        # prints one link per reader
    RETINA_FAST_ADMIN_TOKEN=... retina-fast turing serve --db sqlite:///turing.db --host 0.0.0.0
    # readers open their links; progress and CSV/JSON export at http://HOST:8000/admin
    retina-fast turing analyze export.csv --out results/

Serve over TLS (a reverse proxy) outside a trusted network: the admin token and reader links
travel in the clear otherwise.
"""
