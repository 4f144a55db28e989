"""Vector export formats shared by the CLI and the UI's downloads: one definition of each layout.

JSONL: `{"index", "text", "vector", "dimension", "truncated"}` per text; CSV: `index,text,truncated,d0…`;
NPY: the float32 matrix. No torch here.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_vectors(texts: Sequence[str], result: Any, fmt: str, output: str | None, first_index: int = 0) -> None:
    """`first_index`: the row index of the first text (a shard's rows keep their index in the whole input)."""
    import numpy as np

    if fmt == "npy":
        np.save(output, result.vectors)
        return
    buf = io.StringIO()
    if fmt == "jsonl":
        for i, text in enumerate(texts):
            buf.write(json.dumps({"index": first_index + i, "text": text, "vector": result.vectors[i].tolist(),
                                  "dimension": result.dimension, "truncated": result.truncated[i]},
                                 ensure_ascii=False) + "\n")
    else:
        w = csv.writer(buf)
        w.writerow(["index", "text", "truncated", *[f"d{j}" for j in range(result.dimension)]])
        for i, text in enumerate(texts):
            w.writerow([first_index + i, text, str(result.truncated[i]).lower(),
                        *(repr(float(x)) for x in result.vectors[i])])
    if output:
        Path(output).write_text(buf.getvalue(), encoding="utf-8")
    else:
        sys.stdout.write(buf.getvalue())
