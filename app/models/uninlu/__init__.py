"""RexUniNLU (iic/nlp_deberta_rex-uninlu_chinese-base): schema-driven extraction and classification.

Pure modules (no torch): `schema` (validation, task choice), `presets` (ready-made examples), `prompt`
(hints, windows, positions, 2-D masks), `decode` (logits → spans, numpy only), `pipeline` (the level
loop over a forward function). Torch modules: `backbone`, `head`, `adapter`, `fixture`.
Importing this package imports neither torch nor transformers.
"""
