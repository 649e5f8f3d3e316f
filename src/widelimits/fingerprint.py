"""Exact fingerprints of network descriptions (and of any value built from plain Python parts).

A kernel store must know whether it was computed for *this* network, exactly: the printed text
is not enough (``Elementwise(lambda x: torch.tanh(x))`` and ``Elementwise(lambda x:
torch.sin(x))`` print alike, as do tensors that differ past the fourth digit).  `fingerprint`
walks the value recursively and hashes (sha256, Merkle style) everything that can change what
it computes:

- ``None``, bools, ints, strings, bytes; floats at full precision (``float.hex``);
- torch tensors and numpy arrays: dtype, shape and raw bytes;
- tuples, lists, dicts and sets (dicts and sets in an order independent of insertion and of
  hash randomization);
- objects: their class, and their state (``__dict__`` and ``__slots__``) recursively;
  attributes whose name ends in ``_cache`` are derived data and skipped;
- Python functions by their code (bytecode, constants including nested code objects, names),
  defaults, closure values and the globals they read (recursively, cycles included; from a
  user module they read, the attributes named in the code), so a captured ``a = 2.0`` and
  ``a = 3.0`` differ; `functools.partial` and bound methods by function and arguments;
- classes, functions and C builtins of Python's standard library, torch, numpy, scipy and
  widelimits by their import name (their code is fixed by the installed versions, which a
  store records); user classes by their name, bases and methods' code; modules by name.

Anything else (an object of a C extension without inspectable state and without an import
name that resolves to it, say) raises `FingerprintError`: the caller then names the network
itself (``compute_kernel_store(..., fingerprint="my-net-v3")``).  Nothing is ever guessed.

Besides the digest, `Fingerprint.parts` records one short digest per attribute path outside
functions (``net.layers[1]._fn``, ``net.layers[0].W_std``...), so that a mismatch can say where
two networks differ.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib
import struct
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Fingerprint", "FingerprintError", "fingerprint"]

LIBRARIES = frozenset({"widelimits", "torch", "numpy", "scipy"}) | frozenset(
    sys.stdlib_module_names
)
"""Top-level packages whose named objects are identified by name, not by content."""

_SKIP_CLASS_ATTRS = frozenset({"_abc_impl"})


class FingerprintError(ValueError):
    """A value that cannot be fingerprinted exactly: name it with an explicit version string."""


@dataclass(frozen=True)
class Fingerprint:
    """The sha256 ``digest`` of a value and ``parts``: path -> ``"Type:digest16"``."""

    digest: str
    parts: dict[str, str] = field(default_factory=dict)

    def differences(self, other_parts: dict[str, str], limit: int = 6) -> list[str]:
        """The outermost paths whose type differs from ``other_parts``, and the innermost ones
        whose value differs (or that exist in only one of them), e.g. ``net.layers[0].W_std``."""
        keys = set(self.parts) | set(other_parts)
        differ = {k for k in keys if self.parts.get(k) != other_parts.get(k)}
        mine = {k: v.split(":")[0] for k, v in self.parts.items()}
        theirs = {k: v.split(":")[0] for k, v in other_parts.items()}

        def below(d: str, k: str) -> bool:
            return d != k and d.startswith(k) and d[len(k)] in ".["

        # a path retyped, or in only one of them: report it, not what lies below it
        outer = {k for k in differ if mine.get(k) != theirs.get(k)}
        differ = {d for d in differ if not any(below(d, k) for k in outer)}
        out = []
        for k in sorted(differ):
            if k not in mine or k not in theirs:
                out.append(f"{k} ({mine.get(k) or theirs.get(k)}, only in one of them)")
            elif k in outer:
                out.append(f"{k} ({theirs[k]} before, {mine[k]} now)")
            elif not any(below(d, k) for d in differ):
                out.append(f"{k} ({mine[k]})")
        return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


def fingerprint(value, root: str = "net") -> Fingerprint:
    """Fingerprint ``value`` exactly (see the module docstring); ``root`` names it in paths.

    Raises:
        FingerprintError: some part cannot be fingerprinted; the message says which.
    """
    walker = _Walker()
    digest = walker.digest(value, root, record=True)
    return Fingerprint(digest.hex(), walker.parts)


def _qualname(obj) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _is_library(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in LIBRARIES


def _import_name(obj) -> str | None:
    """``module:qualname`` when importing that name gives back ``obj`` itself, else None."""
    owner = getattr(obj, "__objclass__", None)  # method descriptors: int.__add__, Tensor.add
    if owner is not None:
        base = _import_name(owner)
        name = getattr(obj, "__name__", None)
        if base and name and getattr(owner, name, None) is obj:
            return f"{base}.{name}"
        return None
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        module = type(obj).__module__ if callable(obj) else None
    if not isinstance(module, str):
        return None
    for name in (getattr(obj, "__qualname__", None), getattr(obj, "__name__", None)):
        if not isinstance(name, str) or "<" in name:
            continue
        try:
            found = importlib.import_module(module)
            for part in name.split("."):
                found = getattr(found, part)
        except Exception:  # noqa: BLE001 - any failure means: not this name
            continue
        if found is obj:
            return f"{module}:{name}"
    return None


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


class _Walker:
    """One recursive walk: Merkle digests, the recorded parts, and cycle protection."""

    def __init__(self) -> None:
        self.parts: dict[str, str] = {}
        self._active: dict[int, int] = {}  # id of an object being walked -> its depth

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _h(tag: str, *chunks: bytes) -> bytes:
        h = hashlib.sha256(tag.encode())
        for c in chunks:
            h.update(struct.pack("<Q", len(c)))
            h.update(c)
        return h.digest()

    def _fail(self, obj, where: str, why: str = "") -> FingerprintError:
        return FingerprintError(
            f"cannot fingerprint {where}, a {_qualname(obj)}{why}: its identity (and so whether "
            "a stored kernel belongs to this network) cannot be established; pass a name or "
            "version string that you choose for this network, e.g. "
            "compute_kernel_store(..., fingerprint='my-net-v1'), and change it whenever the "
            "network changes"
        )

    # -- the walk -----------------------------------------------------------------------------

    def digest(self, obj, where: str, record: bool = False) -> bytes:
        """Digest of ``obj``, found at ``where``; ``record``: add it (and its parts) to parts."""
        key = id(obj)
        if key in self._active:  # a cycle: refer to the enclosing object by its distance
            return self._h("cycle", str(len(self._active) - self._active[key]).encode())
        self._active[key] = len(self._active)
        try:
            d = self._dispatch(obj, where, record)
        finally:
            del self._active[key]
        if record:
            self.parts[where] = f"{type(obj).__name__}:{d.hex()[:16]}"
        return d

    def _dispatch(self, obj, where: str, record: bool) -> bytes:  # noqa: PLR0911, PLR0912
        if obj is None or isinstance(obj, bool | int | str | bytes | bytearray):
            return self._h(type(obj).__name__, repr(obj).encode())
        if isinstance(obj, float):
            return self._h("float", obj.hex().encode())
        if isinstance(obj, complex):
            return self._h("complex", obj.real.hex().encode(), obj.imag.hex().encode())
        if isinstance(obj, torch.dtype | torch.device | torch.layout | torch.memory_format):
            return self._h("torch", _qualname(obj).encode(), str(obj).encode())
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj, where)
        if isinstance(obj, np.ndarray | np.generic):
            return self._array(np.asarray(obj), where, record)
        if isinstance(obj, tuple | list):
            items = [self.digest(v, f"{where}[{i}]", record) for i, v in enumerate(obj)]
            return self._h(_qualname(obj), *items)
        if isinstance(obj, dict):
            return self._dict(obj, where, record)
        if isinstance(obj, set | frozenset):
            items = sorted(self.digest(v, f"{where}{{}}") for v in obj)
            return self._h(_qualname(obj), *items)
        if isinstance(obj, types.ModuleType):
            return self._h("module", obj.__name__.encode())
        if isinstance(obj, types.CodeType):
            return self._code(obj, where)
        if isinstance(obj, types.FunctionType):
            name = _import_name(obj)
            if name and _is_library(obj.__module__):
                return self._h("named", name.encode())
            return self._function(obj, where)
        if isinstance(obj, functools.partial):
            return self._h(
                "partial", self.digest(obj.func, f"{where}.func"),
                self.digest(obj.args, f"{where}.args"),
                self.digest(obj.keywords, f"{where}.keywords"),
            )  # fmt: skip
        if isinstance(obj, types.MethodType):
            return self._h(
                "method", self.digest(obj.__func__, f"{where}.__func__"),
                self.digest(obj.__self__, f"{where}.__self__"),
            )  # fmt: skip
        if isinstance(obj, staticmethod | classmethod):
            return self._h(_qualname(obj), self.digest(obj.__func__, f"{where}.__func__"))
        if isinstance(obj, property):
            parts = [self.digest(f, f"{where}.{n}") for n, f in
                     (("fget", obj.fget), ("fset", obj.fset), ("fdel", obj.fdel))]  # fmt: skip
            return self._h("property", *parts)
        if isinstance(obj, type):
            return self._class(obj, where)
        name = _import_name(obj)
        if name is not None:  # builtins and C functions: torch.tanh, math.exp, numpy.sin
            return self._h("named", name.encode())
        self_ = getattr(obj, "__self__", None)
        if isinstance(obj, types.BuiltinMethodType) and self_ is not None:  # [].append, t.add
            return self._h("bound builtin", obj.__name__.encode(), self.digest(self_, where))
        return self._object(obj, where, record)

    def _tensor(self, t: torch.Tensor, where: str) -> bytes:
        try:
            data = t.detach().cpu()
            if data.layout != torch.strided:
                data = data.to_dense()
            raw = data.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        except (RuntimeError, TypeError) as err:
            raise self._fail(t, where, f" ({err})") from err
        meta = f"{_qualname(t)}|{t.dtype}|{tuple(t.shape)}|{t.layout}".encode()
        return self._h("tensor", meta, raw)

    def _array(self, a: np.ndarray, where: str, record: bool) -> bytes:
        meta = f"{a.dtype.str}|{a.dtype.descr}|{a.shape}".encode()
        if a.dtype.hasobject:
            return self._h("object array", meta, self.digest(a.tolist(), where, record))
        return self._h("array", meta, np.ascontiguousarray(a).tobytes())

    def _dict(self, d: dict, where: str, record: bool) -> bytes:
        entries = []
        for k, v in d.items():
            label = f"{where}[{k!r}]" if isinstance(k, str | int) else f"{where}[{type(k)}]"
            entries.append(self.digest(k, f"{label}.key") + self.digest(v, label, record))
        return self._h(_qualname(d), *sorted(entries))

    def _code(self, code: types.CodeType, where: str) -> bytes:
        consts = [self.digest(c, f"{where}.<constant>") for c in code.co_consts]
        fields = [
            code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode(),
            repr(code.co_freevars).encode(), repr(code.co_cellvars).encode(),
            repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                  code.co_flags)).encode(),
            getattr(code, "co_exceptiontable", b""),
        ]  # fmt: skip
        return self._h("code", *fields, *consts)

    def _function(self, fn: types.FunctionType, where: str) -> bytes:
        parts = [
            self.digest(fn.__code__, f"{where}.<code>"),
            self.digest(fn.__defaults__, f"{where}.<defaults>"),
            self.digest(fn.__kwdefaults__, f"{where}.<kwdefaults>"),
        ]
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later in the enclosing scope)
                parts.append(self._h("empty cell", name.encode()))
                continue
            parts.append(self._h("cell", name.encode(), self.digest(value, f"{where}.<{name}>")))
        names = _code_names(fn.__code__)
        for name in sorted(names):
            if name in fn.__globals__:
                value = fn.__globals__[name]
                label = f"{where}.<global {name}>"
                parts.append(self._h("global", name.encode(), self._global(value, names, label)))
            elif hasattr(builtins, name):
                parts.append(self._h("builtin", name.encode()))
        return self._h("function", *parts)

    def _global(self, value, names: set[str], where: str) -> bytes:
        """A global read by a function; a user module with the attributes the code names."""
        if not isinstance(value, types.ModuleType) or _is_library(value.__name__):
            return self.digest(value, where)
        key = id(value)
        if key in self._active:
            return self._h("cycle module", value.__name__.encode())
        self._active[key] = len(self._active)
        try:
            attrs = [
                self._h(n, self._global(getattr(value, n), names, f"{where}.{n}"))
                for n in sorted(names) if hasattr(value, n)
            ]  # fmt: skip
        finally:
            del self._active[key]
        return self._h("user module", value.__name__.encode(), *attrs)

    def _class(self, cls: type, where: str) -> bytes:
        name = _import_name(cls)
        if name and _is_library(cls.__module__):
            return self._h("named class", name.encode())
        # a user class: its name, bases and body (methods by their code)
        parts = [self.digest(b, f"{where}.<base>") for b in cls.__bases__]
        for attr, value in sorted(vars(cls).items()):
            dunder = attr.startswith("__") and attr.endswith("__")
            code_like = isinstance(
                value, types.FunctionType | staticmethod | classmethod | property
            )
            if attr in _SKIP_CLASS_ATTRS or (dunder and not code_like):
                continue
            parts.append(self._h(attr, self.digest(value, f"{where}.{attr}")))
        return self._h("class", cls.__qualname__.encode(), *parts)

    def _object(self, obj, where: str, record: bool) -> bytes:
        state = {}
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                    state[slot] = getattr(obj, slot)
        has_dict = hasattr(obj, "__dict__") and isinstance(vars(obj), dict)
        if has_dict:
            state.update(vars(obj))
        if not has_dict and not state:
            raise self._fail(obj, where, " (no inspectable state, no import name)")
        parts = [self.digest(type(obj), f"{where}.<class>")]
        for attr, value in sorted(state.items()):
            if attr.endswith("_cache"):
                continue
            parts.append(self._h(attr, self.digest(value, f"{where}.{attr}", record)))
        return self._h("object", *parts)
