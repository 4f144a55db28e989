"""Tuning a model to a team's own labelled pairs, and measuring it: `wenmo tune`, `wenmo evaluate`.

Training runs in its own process (`python -m app tune`, started by hand or by jobs.py for the web app), never
inside the serving process: DeepSpeed ZeRO-2 from ds_config.json, evaluation before and after on held-out pairs,
and a new checkpoint in the source's own layout. A peer of app/engine: the CLI and the service may import it; it
imports app/models and app/engine, never app/web.
"""
