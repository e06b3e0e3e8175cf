"""Gemma 3 (`gemma3`, Gemma3ForConditionalGeneration): a SigLIP vision tower whose patch grid is
average-pooled to a fixed number of soft tokens per image, and a Gemma 3 language model with
interleaved sliding-window and global attention layers.

Processor. `Gemma3Processor` has no video processor, so it builds without torchvision, with the
PIL image processor (`Gemma3ImageProcessorPil`), and loads folders saved by the standard
processor. Every image becomes one fixed-size square (no pan-and-scan by default), written in
the text as `\\n\\n<start_of_image>` + `image_seq_length` x `<image_soft_token>` +
`<end_of_image>\\n\\n`.

Tokens. The chat template is the Gemma 3 checkpoints' (user / model turns, a system message folded
into the first user turn, `<start_of_image>` where an image goes); a turn ends with
`<end_of_turn>`. The image soft token, `<start_of_image>` and `<end_of_image>` are placeholders
that must never be sampled.

Passes are per row (no prefix sharing): the processor's `token_type_ids` mark image tokens, which
attend to each other bidirectionally, and a shared-prefix pass would have to rebuild that mask.
"""

from __future__ import annotations

from transformers import Gemma3Processor

from .base import FamilyAdapter

# The Gemma 3 instruction checkpoints' template (google/gemma-3-4b-it), images and text only.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

SPECIAL_TOKENS = {
    "bos_token": "<bos>",
    "eos_token": "<end_of_turn>",
    "pad_token": "<pad>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}


class Gemma3Adapter(FamilyAdapter):
    family = "gemma3"
    model_types = ("gemma3",)
    processor_class = Gemma3Processor
    placeholder_keys = ("image_token_index", "boi_token_index", "eoi_token_index")
    turn_end_token = "<end_of_turn>"
