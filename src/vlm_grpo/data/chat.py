"""Chat rows: the question, images and answer of one conversation, as TRL's VLM examples and LLaVA write them.

TRL: messages `{"role", "content"}` whose content is a string or a list of parts, `{"type": "image"}` (the
next image of the row's image column; or one carrying its own `image`) and `{"type": "text", "text": ...}`.
LLaVA: `{"from": "human" | "gpt", "value": ...}`, an `<image>` token in the text for each image. A row with
no placeholder at all shows all its images before its first user turn, where TRL's
`prepare_multimodal_messages` puts them. The question is the user turn the answer replies to (the last
user turn when the answer is in a column of its own); the answer, when read from the conversation, is the
first assistant turn after a user turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadSample

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
IMAGE_TOKEN = re.compile(r"\s*<image>\s*")
_PLACEHOLDER = object()  # an image part that takes the next image of the row's image column


@dataclass(frozen=True)
class Turn:
    role: str
    """`user`, `assistant`, or the message's own role (`system`, `tool`: neither asked nor answered)."""
    text: str
    images: tuple[Any, ...]
    """Its image parts in order: an image the part carries, or `_PLACEHOLDER`."""


@dataclass(frozen=True)
class ChatRow:
    question: str
    images: list[Any]
    answer: str | None
    """The assistant turn that replies to the question; None when the conversation holds none."""


def read_chat(messages: Any, images: Any, row_id: str, answered_here: bool = True) -> ChatRow:
    """The question, the images in placeholder order, and (`answered_here`: the answer is not in a column
    of its own) the answering turn of one conversation."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise BadSample(f"{row_id}: the conversation is not a list of chat messages")
    turns = [_turn(message, row_id) for message in messages]
    asked, answered = _question_and_answer(turns, row_id, answered_here)
    given = list(images) if isinstance(images, (list, tuple)) else [] if images is None else [images]
    return ChatRow(turns[asked].text, _place_images(turns, given, row_id), answered)


def has_answer_turn(messages: Any) -> bool:
    """Whether a conversation holds an assistant turn after a user turn (an answer to read from it)."""
    if not isinstance(messages, (list, tuple)):
        return False
    roles = [_role(m) for m in messages if isinstance(m, dict)]
    return "user" in roles and "assistant" in roles[roles.index("user") :]


def _role(message: dict) -> str:
    role = message.get("role", message.get("from"))
    return ROLES.get(role, str(role))


def _turn(message: Any, row_id: str) -> Turn:
    if not isinstance(message, dict):
        raise BadSample(f"{row_id}: a chat message is {type(message).__name__}, not a dict with role and content")
    content = message.get("content", message.get("value"))
    if content is None or isinstance(content, str):
        # LLaVA marks each image with a token in the text; TRL's string content has none.
        text = content or ""
        return Turn(_role(message), IMAGE_TOKEN.sub(" ", text).strip(), (_PLACEHOLDER,) * text.count("<image>"))
    if not isinstance(content, (list, tuple)):
        raise BadSample(f"{row_id}: a chat message's content is {type(content).__name__}, not text or a list")
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text") or "").strip())
        elif kind == "image":
            carried = part.get("image")
            images.append(_PLACEHOLDER if carried is None else carried)
    return Turn(_role(message), "\n".join(t for t in texts if t), tuple(images))


def _question_and_answer(turns: list[Turn], row_id: str, answered_here: bool) -> tuple[int, str | None]:
    """The index of the question's turn and the text of the turn answering it (None: no such turn)."""
    users = [i for i, turn in enumerate(turns) if turn.role == "user"]
    if not users:
        raise BadSample(f"{row_id}: the conversation has no user turn")
    # With the answer in a column, earlier exchanges are examples (a few-shot prompt): the last user turn asks.
    replies = (i for i, turn in enumerate(turns) if turn.role == "assistant" and i > users[0])
    reply = next(replies, None) if answered_here else None
    if reply is None:
        return users[-1], None
    return max(i for i in users if i < reply), turns[reply].text


def _place_images(turns: list[Turn], given: list[Any], row_id: str) -> list[Any]:
    parts = [image for turn in turns if turn.role == "user" for image in turn.images]
    if not parts:
        return given
    wanted = sum(part is _PLACEHOLDER for part in parts)
    if wanted != len(given):
        raise BadSample(f"{row_id}: {wanted} image placeholder(s) in the conversation but {len(given)} image(s)")
    pending = iter(given)
    return [next(pending) if part is _PLACEHOLDER else part for part in parts]
