"""The policy module itself as a rollout engine: a plain decoding loop over the transformers model with its
KV cache. Slow next to vLLM, simple, and the reference for the vLLM path.

Two decoding loops share the sampling and the bookkeeping: the default one lets rows that ended leave the
batch and prefills a prompt shared by a group once; with `compile`, every step runs at the same shapes over
a static KV cache through torch.compile, which on a GPU replays the step as a CUDA graph (one launch
instead of hundreds: a small model's decoding there is bound by kernel launches, not by the GPU)."""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Any

import torch

from rltune.batch import RolloutBatch
from rltune.distributed import any_process, is_sharded
from rltune.errors import RLTuneError
from rltune.models import keeps_logits
from rltune.rollout.base import ENGINES, SamplingSettings, check_context


@ENGINES.register("hf")
class HFEngine:
    """Samples from the live policy module itself, so `sync_weights` has nothing to copy."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, batch_size: int = 64, compile: bool = False, **_: Any):
        self.model = model
        # FSDP2 shards: every forward gathers each layer from all processes, so every process must run as
        # many forwards as the others; decoding goes on until all processes' rows have ended.
        self.lockstep = is_sharded(model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.compile = compile
        self._compiled: tuple[torch.nn.Module, Any] | None = None  # (model, its compiled forward)
        self._cache: tuple[tuple, Any] | None = None  # (shape, the static KV cache kept for the next rollout)
        eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))

    @property
    def context_length(self) -> int | None:
        """Positions the model takes, prompt and completion together (its config's max_position_embeddings)."""
        config = self.model.config.get_text_config()
        return getattr(config, "max_position_embeddings", None)

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[list[int]], rows: list[dict[str, Any]], sampling: SamplingSettings
    ) -> RolloutBatch:
        check_context(prompt_ids, sampling, self.context_length, "hf")
        if sampling.repetition_penalty != 1.0 or sampling.generation_kwargs:
            raise RLTuneError(
                "the hf engine has no repetition_penalty and no generation_kwargs (vLLM's); use a vLLM engine"
            )
        was_training = self.model.training
        self.model.eval()
        batch = RolloutBatch([], [], [], [], [], [], list(rows))
        budgets = sampling.budgets(len(prompt_ids))
        flat = [(g, ids, budgets[g]) for g, ids in enumerate(prompt_ids) for _ in range(sampling.n)]
        device = next(self.model.parameters()).device
        seeds = sampling.seeds(len(prompt_ids))
        # Row j of prompt g draws from its own generator, seeded from the prompt's seed: its samples do
        # not depend on which prompts share the batch, and the batch is still generated in one call.
        generators = [_generator(seeds[g], j, device) for g in range(len(prompt_ids)) for j in range(sampling.n)]
        with sampling.progress_bar(total=len(flat), unit="sample") as bar:
            for start in range(0, len(flat), self.batch_size):
                chunk = flat[start : start + self.batch_size]
                self._generate_chunk(chunk, generators[start : start + len(chunk)], sampling, device, batch)
                bar.update(len(chunk))
        self.model.train(was_training)
        return batch

    def _generate_chunk(self, chunk, generators, sampling: SamplingSettings, device, batch: RolloutBatch) -> None:
        """Sample one completion for each (group, prompt ids, budget) of `chunk` and append it to `batch`. The
        chunk decodes up to its largest budget; each row is then cut to its own (sampling is causal: the cut
        row is what the row's own budget would have given)."""
        steps = max(budget for _, _, budget in chunk)
        sampler = RowSampler(generators, sampling.temperature, sampling.top_p, steps, sampling.top_k, sampling.min_p)
        decode = self._decode_static if self.compile else self._decode
        keep = {"logits_to_keep": 1} if keeps_logits(self.model) else {}  # the LM head on the last position only
        stops = StopStrings(self.tokenizer, sampling.stop)
        prompts = [ids for _, ids, _ in chunk]
        drawn_tokens, drawn_logprobs = decode(prompts, sampler, steps, device, keep, stops)
        for (group, ids, budget), tokens, logprobs in zip(chunk, drawn_tokens.tolist(), drawn_logprobs.tolist()):
            tokens, logprobs = tokens[:budget], logprobs[:budget]
            stop = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
            stop = stops.first_end(tokens[: None if stop is None else stop + 1], stop)
            length = len(tokens) if stop is None else stop + 1
            batch.prompt_ids.append(list(ids))
            batch.completion_ids.append(tokens[:length])
            batch.completion_texts.append(self.tokenizer.decode(tokens[:length], skip_special_tokens=True))
            batch.sampling_logprobs.append(logprobs[:length])
            batch.finish_reasons.append("length" if stop is None else "stop")
            batch.group_ids.append(group)

    def _left_padded(self, prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts left-padded to the longest: input ids, attention mask and position ids (each from 0)."""
        width = max(len(ids) for ids in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + list(ids) for ids in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)

    def _decode(
        self, prompts: list[list[int]], sampler: RowSampler, max_tokens: int, device, keep: dict, stops: StopStrings
    ):
        """[rows, steps] drawn tokens and their logprobs. Rows that sample an end token leave the batch and its
        cache; a prompt shared by several rows (a group's samples) is prefilled once."""
        prompt_index: dict[tuple[int, ...], int] = {}  # each distinct prompt, in order of first appearance
        row_prompts = [prompt_index.setdefault(tuple(ids), len(prompt_index)) for ids in prompts]
        row_prompts = torch.tensor(row_prompts, device=device)
        input_ids, attention, positions = self._left_padded(list(prompt_index), device)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        cache = None  # the model builds the cache its layers need (full, sliding-window, recurrent)
        rows = torch.arange(len(prompts), device=device)  # the rows still decoding, in batch order
        drawn_tokens = torch.full((len(prompts), max_tokens), self.pad_id, device=device)
        drawn_logprobs = torch.zeros(len(prompts), max_tokens, device=device)
        # Layers compiled for the update (train.compile) would recompile for every cache length: decode eagerly.
        with _eager():
            for step in range(max_tokens):
                if not len(rows):  # lockstep: this process's rows have ended, not the others'
                    self.model(input_ids=torch.full((1, 1), self.pad_id, device=device))
                    if not any_process(False):
                        break
                    continue
                out = self._forward(self.model, input_ids, attention, positions, cache, **keep)
                cache, logits = out.past_key_values, out.logits[:, -1]
                if step == 0:  # from one row per prompt to one per sample: each gets its prompt's cache and logits
                    cache.reorder_cache(row_prompts)
                    logits, attention, positions = logits[row_prompts], attention[row_prompts], positions[row_prompts]
                tokens, logprobs = sampler.draw(logits)
                drawn_tokens[rows, step], drawn_logprobs[rows, step] = tokens, logprobs
                done = torch.isin(tokens, eos) | stops.ended(drawn_tokens[rows, : step + 1])
                finished = int(done.sum())
                decoding = finished < len(rows)
                if not (any_process(decoding) if self.lockstep else decoding):
                    break
                if not decoding:
                    rows = rows[:0]
                    continue
                input_ids, positions = tokens[:, None], positions[:, -1:] + 1
                attention = torch.cat([attention, attention.new_ones(len(rows), 1)], dim=1)
                if finished:  # rows that ended leave the batch (and their cache): later steps do not compute them
                    left = (~done).nonzero().squeeze(1)
                    cache.reorder_cache(left)
                    rows, input_ids, positions = rows[left], input_ids[left], positions[left]
                    attention = attention[left]
                    sampler.keep_rows(left)
        return drawn_tokens[:, : step + 1], drawn_logprobs[:, : step + 1]

    def _decode_static(
        self, prompts: list[list[int]], sampler: RowSampler, max_tokens: int, device, keep: dict, stops: StopStrings
    ):
        """`_decode`'s result with every decoding step at the same shapes: a static KV cache as long as the
        longest prompt plus `max_tokens` (rounded up to a multiple of STATIC_LENGTH_STEP, so that rollouts
        whose prompts differ a little reuse the compiled step), an attention mask over the whole cache, and
        all rows computed until the last one ends (rows that ended get pads). The prompts are prefilled
        eagerly, one row each; the steps run through the compiled forward."""
        input_ids, prompt_mask, positions = self._left_padded(prompts, device)
        width = input_ids.shape[1]
        length = -(-(width + max_tokens) // STATIC_LENGTH_STEP) * STATIC_LENGTH_STEP
        attention = torch.zeros(len(prompts), length, dtype=prompt_mask.dtype, device=device)
        attention[:, :width] = prompt_mask
        cache = self._static_cache(len(prompts), length)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        # Models whose forward still takes cache positions (older transformers) are given them, as generate does.
        takes_positions = "cache_position" in inspect.signature(self.model.forward).parameters
        at = {"cache_position": torch.arange(width, device=device)} if takes_positions else {}
        with _eager():  # the prompt's shapes differ every rollout: not worth compiling
            out = self._forward(self.model, input_ids, prompt_mask, positions, cache, **keep, **at)
        step_forward = self._compiled_forward()
        drawn_tokens = torch.full((len(prompts), max_tokens), self.pad_id, device=device)
        drawn_logprobs = torch.zeros(len(prompts), max_tokens, device=device)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        for step in range(max_tokens):
            tokens, logprobs = sampler.draw(out.logits[:, -1])
            drawn_tokens[:, step] = tokens.masked_fill(done, self.pad_id)
            drawn_logprobs[:, step] = logprobs
            done |= torch.isin(tokens, eos) | stops.ended(drawn_tokens[:, : step + 1])
            ended = bool(done.all())
            if step == max_tokens - 1 or (not any_process(not ended) if self.lockstep else ended):
                break
            attention[:, width + step] = 1
            positions = positions[:, -1:] + 1
            if takes_positions:
                at["cache_position"] = torch.full((1,), width + step, device=device)
            if device.type == "cuda":  # the last step's outputs (read above) may be overwritten from here on
                torch.compiler.cudagraph_mark_step_begin()
            out = self._forward(step_forward, tokens[:, None], attention, positions, cache, **keep, **at)
        return drawn_tokens[:, : step + 1], drawn_logprobs[:, : step + 1]

    def _forward(self, forward, input_ids, attention_mask, position_ids, cache, **extra):
        """`forward` (the model's, or its compiled one) on new tokens with the KV cache; `extra`: the model's
        further keyword arguments (logits_to_keep, cache_position)."""
        return forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )

    def _static_cache(self, rows: int, length: int):
        """A static KV cache of `rows` x `length`, emptied; the same one as last time when the shape is the
        same, so that a compiled step (a CUDA graph, recorded on the cache's buffers) is replayed, not redone."""
        from transformers import StaticCache

        shape = (rows, length, self.model.dtype)
        if self._cache is None or self._cache[0] != shape:
            self._cache = (shape, StaticCache(config=self.model.config, max_cache_len=length))
        cache = self._cache[1]
        cache.reset()
        return cache

    def _compiled_forward(self):
        """The model's forward through torch.compile (CUDA graphs on a GPU), compiled once per model."""
        if self._compiled is None or self._compiled[0] is not self.model:
            mode = "reduce-overhead" if next(self.model.parameters()).device.type == "cuda" else None
            self._compiled = (self.model, torch.compile(self.model.forward, mode=mode, dynamic=False))
        return self._compiled[1]

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model
        self.lockstep = is_sharded(model)

    def close(self) -> None:
        self.model = self._compiled = self._cache = None


STATIC_LENGTH_STEP = 128
"""With `compile`, the static KV cache's length is a multiple of this many tokens."""


def _eager():
    """Layers compiled elsewhere (train.compile) run eagerly here instead of recompiling for new shapes."""
    return torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else nullcontext()


def _generator(seed: int | None, row: int, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(hash((seed, row)) % 2**63)


class StopStrings:
    """Where completions end on stop strings: at the token that completes the first one."""

    def __init__(self, tokenizer: Any, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, list(stops)
        # every token decodes to a character or more: the last `window` tokens hold any string just completed
        self.window = max((len(s) for s in self.stops), default=0) + 1

    def ended(self, drawn: torch.Tensor) -> torch.Tensor:
        """[rows] whether the last token of each row of `drawn` [rows, steps] completed a stop string."""
        if not self.stops:
            return torch.zeros(drawn.shape[0], dtype=torch.bool, device=drawn.device)
        tails = self.tokenizer.batch_decode(drawn[:, -self.window :].tolist(), skip_special_tokens=True)
        before = self.tokenizer.batch_decode(drawn[:, -self.window : -1].tolist(), skip_special_tokens=True)
        hit = [self._found(t) and not self._found(b) for t, b in zip(tails, before)]
        return torch.tensor(hit, dtype=torch.bool, device=drawn.device)

    def first_end(self, tokens: list[int], end: int | None) -> int | None:
        """The index of the token completing the first stop string in `tokens`, else `end`: the first token
        whose window of the last `window` tokens holds one (as `ended` found it while decoding)."""

        def text(ids: list[int]) -> str:  # as the completion's text is, and vLLM matches stop strings
            return self.tokenizer.decode(ids, skip_special_tokens=True)

        if not self.stops or not self._found(text(tokens)):
            return end
        return next(i for i in range(len(tokens)) if self._found(text(tokens[max(0, i + 1 - self.window) : i + 1])))

    def _found(self, text: str) -> bool:
        return any(s in text for s in self.stops)


class RowSampler:
    """Temperature, top-k, min-p and nucleus sampling with one generator per row; temperature 0 is greedy.

    Each row draws its uniform numbers for all `steps` up front from its own generator (so a row's samples
    do not depend on its batch-mates), and a step's token is the inverse of the row's cumulative
    distribution at that step's number: one cumsum and one binary search for the whole batch. (Drawing a
    vocabulary-sized noise vector per row and step instead took 31 of the 38 ms of a sampling step at a
    49k vocabulary on the CPU.)"""

    def __init__(
        self,
        generators: list[torch.Generator | None],
        temperature: float,
        top_p: float,
        steps: int,
        top_k: int = 0,
        min_p: float = 0.0,
    ):
        self.temperature, self.top_p, self.top_k, self.min_p, self.step = temperature, top_p, top_k, min_p, 0
        self.uniforms = torch.stack(
            [torch.rand(steps, generator=g, device=g.device if g is not None else None) for g in generators]
        )

    def keep_rows(self, index: torch.Tensor) -> None:
        """Go on with the rows at `index` only (the others finished)."""
        self.uniforms = self.uniforms[index.to(self.uniforms.device)]

    def draw(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[rows] drawn tokens from [rows, vocab] logits, and each one's log-probability at the temperature
        (before the top-k, min-p and top-p cut-offs, applied in vLLM's order): the policy's logprob, which
        the update's importance ratio starts from."""
        if self.temperature <= 0:
            return logits.argmax(-1), logits.new_zeros(logits.shape[0], dtype=torch.float32)  # one-hot: log 1
        scaled = logits.float() if self.temperature == 1.0 else logits.float() / self.temperature
        # One softmax, not exp(log_softmax): the drawn token's logprob is the log of its probability (a token
        # of zero probability is never drawn), and each full-vocabulary pass is one kernel more per step.
        probs = full = scaled.softmax(-1)
        if self.min_p > 0:
            probs = probs.masked_fill(probs < self.min_p * probs.amax(-1, keepdim=True), 0.0)
        if 0 < self.top_k < probs.shape[-1]:
            kth = probs.topk(self.top_k, dim=-1).values[:, -1:]
            probs = probs.masked_fill(probs < kth, 0.0)  # ties with the k-th token stay
        if self.top_p < 1.0:
            probs = probs / probs.sum(-1, keepdim=True)  # top-p's share is of what the other cut-offs kept
            ordered, order = probs.sort(-1, descending=True)
            outside = ordered.cumsum(-1) - ordered > self.top_p  # the top token always stays
            probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        cumulative = probs.cumsum(-1)
        total = cumulative[:, -1:]  # 1 up to rounding, or the mass the cut-offs kept: scaling by it renormalises
        point = self.uniforms[:, self.step, None].to(logits.device) * total
        point = torch.minimum(point, torch.nextafter(total, torch.zeros_like(total)))  # below the last step up
        self.step += 1
        drawn = torch.searchsorted(cumulative, point, right=True).squeeze(-1)  # first cumulative > point
        return drawn, full.gather(-1, drawn[:, None]).squeeze(-1).log()
