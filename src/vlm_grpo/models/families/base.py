"""The model-family adapter interface, and the generic adapter that serves any model.

An adapter holds everything that depends on a model family's internals: building and loading
its processor with and without torchvision, its vision placeholder ids, its turn-end token,
prefilling a prompt once and continuing from the cache with the right positions (shared-prefix
sampling and log-prob passes), sharing image features between the rows of a group, fitting
images to the processor's pixel budget. Rollout and
log-prob code call the adapter and never test a model type themselves.

`FamilyAdapter` itself is the generic adapter: any `AutoModelForImageTextToText` with per-row
passes (no prefix sharing, no feature sharing). A new family is one module with a subclass,
registered in `families/__init__.py` (or by a plug-in with `register_family`): most of it is
declared in class attributes (its processor class and image-only fallback, video processor,
placeholder config keys, turn-end token), and only what a family computes differently, such as
prefix passes or image features, is a method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .processors import load_processor_of, torchvision_available


class FamilyAdapter:
    family = "generic"
    """The family's name, as `tiny-<family>` and `vlm-grpo models` show it."""
    model_types: tuple[str, ...] = ()
    """transformers `config.model_type` values this adapter serves."""
    supports_prefix = False
    """Prefill once per prompt and continue from the repeated cache (exact, checked per family)."""
    supports_feature_sharing = False
    """Encode each image once and hand its features to the rows of its group."""
    supports_video = False
    """Takes video samples: its processor builds video inputs (`frames.py`) and its forward and prefix
    passes take them. A run whose data holds a video refuses the other families at start."""
    processor_class: type | None = None
    """The class that builds and loads the family's processor; None: `AutoProcessor` loads it."""
    image_only_processor: type | None = None
    """For a `processor_class` that needs torchvision (for its video processor): its image-only
    subclass, used where torchvision does not import or the standard class cannot be built."""
    video_processor_type: str | None = None
    """The video processor a standard folder of this family holds, by its `video_processor_type`
    (None: the family has none). The vLLM engine writes it into the folder it serves, as vLLM's
    processing for the family builds one even for images."""
    placeholder_keys: tuple[str, ...] = (
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
    )
    """The model config's attributes that hold the ids of its vision placeholder tokens."""
    turn_end_token: str | None = None
    """The token that ends an assistant turn, where the chat template does not show it (None: EOS)."""

    # ------------------------------------------------------------ processors and tokens
    def processor_classes(self) -> list[type]:
        """The classes that may build this family's processor, in the order they are tried."""
        if self.image_only_processor is None:
            return [self.processor_class]
        standard = [self.processor_class] if torchvision_available() else []
        return standard + [self.image_only_processor]

    def make_processor(self, image_processor, tokenizer, chat_template: str | None, **settings):
        """The family's processor built from its parts (the tiny builders')."""
        if self.processor_class is None:
            raise NotImplementedError(f"the {self.family} family names no processor class to build")
        *standard, last = self.processor_classes()
        parts = dict(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **settings)
        for processor_class in standard:
            try:
                return processor_class(**parts)
            except (TypeError, ValueError, AttributeError):
                pass  # the standard class did not build here: the image-only one does
        return last(**parts)

    def load_processor(self, path: str, model_type: str, trust_remote_code: bool = False):
        """The processor of a model folder (or hub name), with the family's processor class."""
        if self.processor_class is None:
            return auto_processor(path, model_type, trust_remote_code)
        *standard, last = self.processor_classes()
        for processor_class in standard:
            try:
                return processor_class.from_pretrained(path)
            except Exception:  # torchvision half-working surfaces as several exception types
                pass
        return load_processor_of(last, path, self.family)

    def use_video_positions(self, model, rule: str) -> None:
        """Where the text after a video sits (`video.positions`): transformers' rule, or the Qwen reference's
        where the family's M-RoPE tells them apart (`qwen2_vl.py`); a no-op for the other families."""

    def places_text_after_video_as_reference(self, model, grid: list[int], seconds: float | None) -> bool:
        """Whether the model places the text after a video of `grid` ((t, h, w) patches; `seconds` per frame
        pair where the family has them) where the Qwen reference, and vLLM, do: yes unless the family's
        M-RoPE tells the rules apart (`qwen2_vl.py`)."""
        return True

    def vision_token_ids(self, model) -> list[int]:
        """Placeholder tokens of images and videos: a completion must never contain them, or the
        next forward pass would count one more image slot than there are image features."""
        config = model.config
        keys = self.placeholder_keys
        return sorted({getattr(config, k) for k in keys if isinstance(getattr(config, k, None), int)})

    def turn_end_id(self, processor) -> int:
        """The token the chat template writes right after an assistant message (<|im_end|> for Qwen).

        Demonstrations must end with this token, not just any EOS id: Qwen's generation config also
        lists <|endoftext|>, which the model never emits after an answer, so a demonstration ending
        with it would teach a near-impossible token instead of how to stop.
        """
        tokenizer = getattr(processor, "tokenizer", processor)
        marker = "vlm-grpo-turn-end-probe"
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": marker}]},
        ]
        try:
            rendered = processor.apply_chat_template(messages, tokenize=False)
        except (ValueError, TypeError, AttributeError):
            rendered = None
        if isinstance(rendered, str) and marker in rendered:
            after = rendered[rendered.rindex(marker) + len(marker) :]
            tokens = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
            if tokens and tokens[0] in tokenizer.all_special_ids:
                return tokens[0]
        return self.fallback_turn_end_id(tokenizer)

    def fallback_turn_end_id(self, tokenizer) -> int:
        """The turn end when the chat template does not show it: the family's `turn_end_token` where
        the tokenizer knows it, else the tokenizer's EOS."""
        if self.turn_end_token is not None:
            turn_end = tokenizer.convert_tokens_to_ids(self.turn_end_token)
            if isinstance(turn_end, int) and turn_end != tokenizer.unk_token_id:
                return turn_end
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer defines no end-of-turn token; set its eos_token")
        return tokenizer.eos_token_id

    def end_token_ids(self, processor, model) -> list[int]:
        """Tokens that end an assistant turn: the template's turn end and the model's own EOS ids."""
        try:
            turn_end = self.turn_end_id(processor)
        except ValueError:
            turn_end = None
        return self.with_eos_ids(model, turn_end)

    def with_eos_ids(self, model, turn_end: int | None) -> list[int]:
        """`turn_end` and the model's generation-config EOS ids, sorted."""
        eos = model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        ids |= {turn_end} if turn_end is not None else set()
        if not ids:
            raise ValueError("the model defines no end-of-turn token; set generation_config.eos_token_id")
        return sorted(ids)

    def fit_image(self, image, processor):
        """The image as the trainer keeps it in memory; families whose processor resizes resize once here."""
        return image

    def logprob_sharing(self, requested: str, gradient_checkpointing: bool) -> str:
        """The log-prob pass for `requested` (`auto`: the fastest exact one this family supports;
        the prefix pass needs the KV cache, which activation checkpointing turns off)."""
        if requested != "auto":
            return requested
        if self.supports_prefix and not gradient_checkpointing:
            return "prefix"
        return "vision" if self.supports_feature_sharing else "none"

    # ------------------------------------------------------------ the output head
    def output_head(self, model) -> torch.nn.Module:
        """The module that projects final hidden states to logits (a tied head stays tied: it is the
        model's own module). Called as a module, so that wrappers on it (LoRA, ZeRO-3's parameter
        fetches) act as in the forward."""
        head = base_model(model).get_output_embeddings()
        if head is None:
            raise NotImplementedError(f"{type(base_model(model)).__name__} has no output embeddings to project with")
        return head

    @contextmanager
    def head_replaced(self, model, project: Callable[[torch.Tensor, Callable], torch.Tensor]) -> Iterator[None]:
        """Inside the block, each forward of `model` hands its output head zero positions (it computes
        nothing) and returns, in place of the logits, what `project(hidden, head)` gives for the
        hidden states the head would have projected, (b, t, H), and the head's own forward. The
        log-prob passes project only the positions they need, a chunk at a time, and inside the
        forward, where wrappers act as they would on the head (FSDP's gathered weights and its
        backward hooks on the output, autocast, LoRA on the head)."""
        head, taken = self.output_head(model), []

        def before(module, args):
            taken.append(args[0])
            return (args[0][..., :0, :], *args[1:])

        def after(module, args, output):
            return project(taken.pop(), module.forward)

        # prepend: before any other forward hook, such as one that releases gathered weights.
        handles = [head.register_forward_pre_hook(before), head.register_forward_hook(after, prepend=True)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ------------------------------------------------------------ shared-prefix passes
    def _no_prefix(self, model_type: str) -> NotImplementedError:
        return NotImplementedError(
            f"prompt sharing relies on model internals checked per family; model type {model_type!r} has "
            "no adapter that supports it: use logprob_sharing=none and generation_sharing=none"
        )

    def prefill(self, model, inputs: dict[str, torch.Tensor]):
        """Encode prompts once: (logits of the last prompt position (b, 1, V), KV cache, next position (b,)).
        Under `head_replaced` the logits are what its `project` gives."""
        raise self._no_prefix(base_model(model).config.model_type)

    def positions(self, start: torch.Tensor, length: int) -> torch.Tensor:
        """Position ids of `length` text tokens continuing from `start` (b,), as the forward takes them."""
        raise self._no_prefix("generic")

    def image_features(self, model, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> tuple:
        """One feature tensor per image, to be handed to the rows that show it."""
        raise NotImplementedError(
            f"image-feature sharing is not supported for model type {base_model(model).config.model_type!r}: "
            "use logprob_sharing=none"
        )

    def video_features(self, model, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor) -> tuple:
        """One feature tensor per video, to be handed to the rows that show it."""
        raise NotImplementedError(
            f"video-feature sharing is not supported for model type {base_model(model).config.model_type!r}: "
            "use logprob_sharing=none"
        )

    def image_encoder_output(self, per_row: tuple):
        """The forward's `mm_encoder_outputs["image"]` (or `["video"]`) for rows given one `image_features`
        (`video_features`) item each."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(pooler_output=per_row)


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def auto_processor(path: str, model_type: str, trust_remote_code: bool):
    """AutoProcessor, which must yield a processor with an image processor."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # torchvision missing surfaces as several exception types
        processor, error = None, exc
    else:
        error = None
    if processor is not None and hasattr(processor, "image_processor"):
        return processor
    raise RuntimeError(
        f"{path}: AutoProcessor did not give an image processor for model type {model_type!r}"
        + (f" ({error})" if error else "")
        + ". Install torchvision, or save a complete processor (processor_config.json) with the model."
    )
