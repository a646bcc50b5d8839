import os
from typing import overload

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
    def open(cls, dir: str | os.PathLike[str] | None = ..., *, tokenizer_only: bool = ...) -> Model: ...
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
