import os
from typing import Sequence, overload

import numpy as np
import numpy.typing as npt

class Model:
    type: str
    dir: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    max_seq_length: int
    @classmethod
    def open(cls, dir: str | os.PathLike[str] | None = ..., *, tokenizer_only: bool = ...,
             weights: str = ...) -> Model: ...
    def get_sentence_embedding_dimension(self) -> int: ...
    @overload
    def tokenize(self, texts: str, *, max_length: int | None = ...) -> list[int]: ...
    @overload
    def tokenize(self, texts: list[str], *, max_length: int | None = ...) -> list[list[int]]: ...
    def encode(
        self,
        sentences: str | list[str],
        batch_size: int = ...,
        show_progress_bar: bool = ...,
        normalize_embeddings: bool = ...,
        *,
        threads: int | None = ...,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def generate(
        self,
        prompt: str,
        max_new_tokens: int = ...,
        temperature: float = ...,
        top_k: int = ...,
        top_p: float = ...,
        seed: int = ...,
        stop: str | None = ...,
        *,
        ignore_eos: bool = ...,
        threads: int | None = ...,
    ) -> str: ...
    @overload
    def generate(
        self,
        prompt: Sequence[int],
        max_new_tokens: int = ...,
        temperature: float = ...,
        top_k: int = ...,
        top_p: float = ...,
        seed: int = ...,
        stop: str | None = ...,
        *,
        ignore_eos: bool = ...,
        threads: int | None = ...,
    ) -> list[int]: ...
    @overload
    def classify(
        self,
        images: str | os.PathLike[str] | npt.NDArray[np.uint8],
        top_k: int = ...,
        *,
        threads: int | None = ...,
    ) -> list[tuple[str, float]]: ...
    @overload
    def classify(
        self,
        images: Sequence[str | os.PathLike[str] | npt.NDArray[np.uint8]],
        top_k: int = ...,
        *,
        threads: int | None = ...,
    ) -> list[list[tuple[str, float]]]: ...
