"""RexUniNLU adapter (iic/nlp_deberta_rex-uninlu_chinese-base): schema in, typed spans or labels out.

Loading reads every size from the checkpoint directory: config.json (architecture, base vocabulary V),
vocab.txt (must hold exactly V entries), the weights' embedding rows (must be V + 4). The four prompt tokens
are appended to the tokenizer in order and must land on ids V…V+3.

`infer` validates the schema and the text, walks the schema level by level (pipeline.py) and runs each
level's windows through the network in length-planned batches (engine scheduler, with its OOM split/retry).
A call keeps all of its state local: concurrent calls share only read-only weights, the tokenizer (behind
a lock) and the forward counter (behind a lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.runtime import RuntimePlan
from app.engine.workqueue import WorkQueue
from app.errors import ModelUnavailableError
from app.models.checkpoint import load_state_dict, load_tokenizer, read_json
from app.models.family import describe, load_module, own_queue, padded_width, queue_for_call
from app.models.uninlu import pipeline
from app.models.uninlu.prompt import HINT_MAX_LEN, MAX_LEN, STRIDE, PromptTokenizer, Window, segment_mask
from app.models.uninlu.schema import ADDED_TOKENS, parse_schema, resolve_task

log = logging.getLogger(__name__)

EMBEDDING_KEY = "plm.embeddings.word_embeddings.weight"
# A window must hold the longest hint, its [CLS]/[SEP]s and more text tokens than the overlap.
MIN_MAX_LEN = HINT_MAX_LEN + 2 + STRIDE + 30


class NluAdapter:
    family = "nlu"
    # Windows per forward at most: a window is up to 512 tokens and its (L, L) logits come back whole.
    batch_size_cap = 32

    def __init__(self, model_dir: Path, plan: RuntimePlan, max_length_cap: int = 0, name: str | None = None):
        import torch

        # deferred: backbone and head pull torch, which only loading a model needs (not `--help`, not the
        # composition root's import)
        from app.models.uninlu.backbone import deberta_config
        from app.models.uninlu.head import RexUniNluModel, rope_frequencies

        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.plan = plan
        config = read_json(model_dir, "config.json")
        if config.get("model_type") != "deberta-v2":
            raise ModelUnavailableError(
                f"{model_dir}/config.json: model_type is {config.get('model_type')!r}, expected 'deberta-v2'; "
                "is this the RexUniNLU checkpoint (iic/nlp_deberta_rex-uninlu_chinese-base)?"
            )
        configuration = read_json(model_dir, "configuration.json", required=False)
        if configuration.get("task") not in (None, "rex-uninlu"):
            log.warning("event=unexpected_task model=%s task=%s expected=rex-uninlu", model_dir,
                        configuration.get("task"))
        base_vocab = int(config["vocab_size"])
        tokenizer = load_tokenizer(model_dir)
        if len(tokenizer) not in (base_vocab, base_vocab + len(ADDED_TOKENS)):
            raise ModelUnavailableError(
                f"{model_dir}: vocab.txt has {len(tokenizer)} distinct entries but config.json says vocab_size "
                f"{base_vocab}; the prompt tokens {', '.join(ADDED_TOKENS)} would get the wrong ids"
            )
        state = load_state_dict(model_dir)
        if EMBEDDING_KEY not in state:
            raise ModelUnavailableError(
                f"{model_dir}: the weights have no {EMBEDDING_KEY}; not a RexUniNLU checkpoint (keys start with "
                f"{sorted(state)[:3]})"
            )
        rows = int(state[EMBEDDING_KEY].shape[0])
        if rows != base_vocab + len(ADDED_TOKENS):
            raise ModelUnavailableError(
                f"{model_dir}: the word embeddings have {rows} rows, expected vocab_size {base_vocab} + "
                f"{len(ADDED_TOKENS)} prompt tokens = {base_vocab + len(ADDED_TOKENS)}"
            )
        self.tokenizer = PromptTokenizer(tokenizer, base_vocab)
        hidden = int(config["hidden_size"])
        freqs = state.get("rotary_emb.freqs")
        if freqs is None:  # older exports do not save it; it is a fixed function of the hidden size
            freqs = rope_frequencies(hidden)
            state["rotary_emb.freqs"] = freqs
        freqs = freqs.to(torch.float32).clone()
        module, self.model = load_module(model_dir, plan, lambda: RexUniNluModel(deberta_config(config, rows)),
                                         state, kernel_inject_supported=False)
        del state
        # prepare_module casts every float tensor to the serving dtype; RoPE frequencies stay float32 (fp16
        # frequencies would shift the angles of far positions by a large fraction of a radian).
        module.rotary_emb.freqs = freqs.to(plan.device)
        self._module = module

        self.max_length = MAX_LEN
        if max_length_cap > 0:
            self.max_length = max(min(MAX_LEN, max_length_cap), MIN_MAX_LEN)
            if self.max_length != max_length_cap and max_length_cap < MAX_LEN:
                log.info("event=max_length_floor model=nlu cap=%d used=%d why=prompt_needs_%d_tokens",
                         max_length_cap, self.max_length, MIN_MAX_LEN)
        self.info = describe(self, model_dir, name, plan, self.max_length, None)
        self.queue = own_queue(self, plan)
        log.info("event=model_loaded family=nlu path=%s vocab=%d+%d hidden=%d layers=%d max_length=%d device=%s "
                 "dtype=%s engine=%s", model_dir, base_vocab, len(ADDED_TOKENS), hidden,
                 int(config["num_hidden_layers"]), self.max_length, plan.device, plan.dtype, plan.engine)
        # Test hooks: windows run so far (all calls), and an optional callback seeing each window before it runs.
        self.forward_count = 0
        self.window_hook: Callable[[Window], None] | None = None
        self._count_lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------------------------

    def infer(self, text: str, schema: Any, task: str | None = None, *, max_batch_tokens: int | None = None,
              max_batch_size: int | None = None, max_forwards: int = pipeline.Budget.max_forwards,
              max_paths: int = pipeline.Budget.max_paths) -> dict[str, Any]:
        """{"task", "output": [[{type, span, offset: [start, end], score}, …], …], "truncated"}.

        Extraction: each inner list is a root-to-leaf path, ancestors first; `text[start:end] == span`.
        Classification: the chosen label path(s); `span` is the label and `offset` is [0, 0].
        Windows go through the role's queue (`max_batch_*` given: this call's own forwards with those limits).
        `max_forwards` / `max_paths`: the request's work budget (pipeline.Budget); past it, BudgetExceededError."""
        parsed = parse_schema(schema)
        resolved, body = resolve_task(text, task)
        queue = queue_for_call(self, self.plan, max_batch_tokens, max_batch_size)

        def forward(windows: Sequence[Window], reduce: pipeline.Reduce) -> list:
            return self._forward(queue, windows, reduce)

        budget = pipeline.Budget(max_forwards, max_paths)
        if resolved == "extract":
            result = pipeline.extract(body, parsed, self.tokenizer, forward, max_len=self.max_length, budget=budget)
            output = [[{"type": it.type, "span": it.span, "offset": [it.start, it.end], "score": it.score}
                       for it in path] for path in result.paths]
        else:
            result = pipeline.classify(body, parsed, self.tokenizer, forward, multi=resolved == "multi_classify",
                                       max_len=self.max_length, budget=budget)
            output = [[{"type": it.type, "span": it.type, "offset": [0, 0], "score": it.score} for it in path]
                      for path in result.paths]
        log.debug("event=nlu_infer task=%s paths=%d windows=%d truncated=%s", resolved, len(output),
                  result.forwards, result.truncated)
        return {"task": resolved, "output": output, "truncated": result.truncated}

    def window_logits(self, windows: Sequence[Window], *, max_batch_tokens: int | None = None,
                      max_batch_size: int | None = None) -> list[np.ndarray]:
        """Each window's (L, L) float32 logits (tests compare batch sizes with this)."""
        queue = queue_for_call(self, self.plan, max_batch_tokens, max_batch_size)
        return self._forward(queue, windows, lambda w, logits: logits.copy())

    # -- the family interface (app/models/family.py) ---------------------------------------------------------

    def forward_batch(self, windows: Sequence[Window]) -> list[np.ndarray]:
        """Each window's (L, L) float32 logits — views into the forward's output, reduced by the caller before
        the next forward (they are the largest thing a level holds)."""
        import torch

        ids, positions, mask = self._collate(windows)
        with torch.inference_mode():
            logits = self.model(ids, positions, mask).float().cpu().numpy()
        return [logits[row, : len(w), : len(w)] for row, w in enumerate(windows)]

    # -- internals ------------------------------------------------------------------------------------------

    def _forward(self, queue: WorkQueue, windows: Sequence[Window], reduce: pipeline.Reduce) -> list:
        hook = self.window_hook
        if hook is not None:
            for w in windows:
                hook(w)
        with self._count_lock:
            self.forward_count += len(windows)
        return queue.run(windows, [len(w) for w in windows], lambda i, logits: reduce(windows[i], logits), model=self)

    def _collate(self, windows: Sequence[Window]):  # noqa: ANN202 - torch tensors
        import torch

        width = padded_width(self, self.plan, max(len(w) for w in windows))
        shape = (len(windows), width)
        ids = torch.full(shape, self.tokenizer.pad_id, dtype=torch.long)
        positions = torch.zeros(shape, dtype=torch.long)
        groups = torch.zeros(shape, dtype=torch.long)
        segments = torch.zeros(shape, dtype=torch.long)
        valid = torch.zeros(shape, dtype=torch.bool)
        for row, w in enumerate(windows):
            n = len(w)
            ids[row, :n] = torch.tensor(w.input_ids)
            positions[row, :n] = torch.tensor(w.position_ids)
            groups[row, :n] = torch.tensor(w.groups)
            segments[row, :n] = torch.tensor(w.segments)
            valid[row, :n] = True
        mask = segment_mask(groups, segments, valid)
        device = self.plan.device
        return ids.to(device), positions.to(device), mask.to(device)
