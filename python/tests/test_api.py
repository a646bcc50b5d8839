"""The public API as the issue names it: signatures, the .pyi stubs against
the functions they describe, docstrings, help(attn.sdpa) as the manual, and
attn.torch's signature against PyTorch's own."""

import ast
import inspect
import pathlib
import pydoc
import re

import pytest

import attn
import attn.torch

PKG = pathlib.Path(attn.__file__).parent


def stub_functions(path):
    """{qualified name: ast.FunctionDef} of a .pyi (methods as Class.name;
    of @overload'ed functions the first, they differ only in Literal types)"""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            out.setdefault(node.name, node)
        elif isinstance(node, ast.ClassDef):
            for f in node.body:
                if isinstance(f, ast.FunctionDef):
                    out.setdefault(node.name + "." + f.name, f)
    return out


def stub_params(fn):
    """[(name, kind, has_default)] of a stub, as inspect names the kinds"""
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [False] * (len(pos) - len(a.defaults)) + [True] * len(a.defaults)
    out = [(p.arg, "POSITIONAL_OR_KEYWORD", d) for p, d in zip(pos, defaults)]
    out += [(p.arg, "KEYWORD_ONLY", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return [p for p in out if p[0] not in ("self", "cls")]


def runtime_params(fn):
    return [(p.name, p.kind.name, p.default is not p.empty)
            for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]


PUBLIC = [
    ("__init__.pyi", "sdpa", attn.sdpa),
    ("__init__.pyi", "sdpa_backward", attn.sdpa_backward),
    ("__init__.pyi", "set_num_threads", attn.set_num_threads),
    ("__init__.pyi", "get_num_threads", attn.get_num_threads),
    ("__init__.pyi", "info", attn.info),
    ("torch.pyi", "scaled_dot_product_attention", attn.torch.scaled_dot_product_attention),
    ("_model.pyi", "Model.open", attn.Model.open),
    ("_model.pyi", "Model.encode", attn.Model.encode),
    ("_model.pyi", "Model.tokenize", attn.Model.tokenize),
    ("_model.pyi", "Model.generate", attn.Model.generate),
    ("_model.pyi", "Model.classify", attn.Model.classify),
    ("_model.pyi", "Model.get_sentence_embedding_dimension",
     attn.Model.get_sentence_embedding_dimension),
]


@pytest.mark.parametrize("stub,name,fn", PUBLIC, ids=[p[1] for p in PUBLIC])
def test_stub_matches_the_function_and_it_has_a_docstring(stub, name, fn):
    stubs = stub_functions(PKG / stub)
    assert name in stubs, "%s has no stub in %s" % (name, stub)
    assert stub_params(stubs[name]) == runtime_params(fn), name
    assert fn.__doc__ and len(fn.__doc__.strip()) > 40, "%s: no docstring" % name


def test_every_public_name_is_covered():
    names = {n for _, n, _ in PUBLIC}
    assert set(attn.__all__) - {"Model"} <= names
    assert set(attn.torch.__all__) <= names
    assert {"Model." + n for n, v in vars(attn.Model).items()
            if not n.startswith("_") and callable(getattr(attn.Model, n))} <= names


def test_the_issue_signatures():
    p = inspect.signature(attn.sdpa).parameters
    want = dict(mask=None, causal=False, align="top-left", window=None, scale=None, softcap=None,
                kv_len=None, alibi_slopes=None, dropout_p=0.0, seed=0, out=None,
                return_lse=False, threads=None)
    assert list(p)[:3] == ["q", "k", "v"]
    for k, d in want.items():
        assert p[k].kind is p[k].KEYWORD_ONLY and p[k].default == d, k
    p = inspect.signature(attn.Model.encode).parameters
    assert p["batch_size"].default == 32 and p["normalize_embeddings"].default is True
    assert p["show_progress_bar"].default is False


def test_torch_signature_is_pytorchs():
    import torch.nn.functional as F

    # F.scaled_dot_product_attention is a builtin: its signature opens its doc
    doc = F.scaled_dot_product_attention.__doc__.strip()
    m = re.match(r"scaled_dot_product_attention\(([^)]*)\)", doc)
    assert m, doc[:200]
    theirs = [a.strip() for a in m.group(1).split(",")]
    ours = [str(p) for p in
            inspect.signature(attn.torch.scaled_dot_product_attention).parameters.values()]
    assert ours == theirs


def test_help_sdpa_is_a_manual():
    text = pydoc.render_doc(attn.sdpa, renderer=pydoc.plaintext)
    for word in ("mask", "causal", "align", "window", "scale", "softcap", "kv_len",
                 "alibi_slopes", "dropout_p", "seed", "out", "return_lse", "threads", "copy",
                 "bottom-right", "GIL", "Returns"):
        assert re.search(r"\b%s\b" % re.escape(word), text), word
    assert len(text.splitlines()) > 50
