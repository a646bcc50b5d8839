"""Type hints of attn (the numpy-level API); see help(attn.sdpa)."""

import os
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from ._model import Model as Model

__version__: str

ArrayF32 = npt.NDArray[np.float32]
Align = Literal["top-left", "bottom-right"]

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def info() -> dict[str, Any]: ...
@overload
def sdpa(
    q: Any,
    k: Any,
    v: Any,
    *,
    mask: Any | None = ...,
    causal: bool = ...,
    align: Align = ...,
    window: tuple[int | None, int | None] | None = ...,
    scale: float | None = ...,
    softcap: float | None = ...,
    kv_len: Any | None = ...,
    alibi_slopes: Any | None = ...,
    global_tokens: Any | None = ...,
    dropout_p: float = ...,
    seed: int = ...,
    out: Any | None = ...,
    return_lse: Literal[False] = ...,
    threads: int | None = ...,
    copy: bool = ...,
) -> ArrayF32: ...
@overload
def sdpa(
    q: Any,
    k: Any,
    v: Any,
    *,
    mask: Any | None = ...,
    causal: bool = ...,
    align: Align = ...,
    window: tuple[int | None, int | None] | None = ...,
    scale: float | None = ...,
    softcap: float | None = ...,
    kv_len: Any | None = ...,
    alibi_slopes: Any | None = ...,
    global_tokens: Any | None = ...,
    dropout_p: float = ...,
    seed: int = ...,
    out: Any | None = ...,
    return_lse: Literal[True],
    threads: int | None = ...,
    copy: bool = ...,
) -> tuple[ArrayF32, ArrayF32]: ...
def sdpa_backward(
    dout: Any,
    q: Any,
    k: Any,
    v: Any,
    out: Any,
    lse: Any,
    *,
    mask: Any | None = ...,
    causal: bool = ...,
    align: Align = ...,
    window: tuple[int | None, int | None] | None = ...,
    scale: float | None = ...,
    softcap: float | None = ...,
    kv_len: Any | None = ...,
    alibi_slopes: Any | None = ...,
    global_tokens: Any | None = ...,
    dropout_p: float = ...,
    seed: int = ...,
    dq: Any | None = ...,
    dk: Any | None = ...,
    dv: Any | None = ...,
    dmask: Any | None = ...,
    return_dmask: bool = ...,
    threads: int | None = ...,
) -> tuple[ArrayF32, ...]: ...
