"""Dump the public API surface of the REAL CuPy package to JSON.

Usage (with the real cupy importable, no GPU needed)::

    python tests/cupy_double/generate_api.py OUTPUT.json

The output is used to check that the CuPy test double in this folder only
exposes names (and parameter names) that real CuPy has.  It is written
deterministically (``sort_keys=True, indent=1``) so that regenerating it
with the same CuPy version gives a byte-identical file.

Shape of the output::

    {"cupy_version": "14.2.0",
     "generator": {...notes on how entries were produced...},
     "namespaces": {"cupy": {NAME: ENTRY, ...}, "cupy.ndarray": {...}, ...}}

ENTRY always has these keys:

    kind            "function" | "class" | "module" | "ufunc" | "constant"
                    | "other"
    params          list of parameter names in order, or null when no
                    signature could be obtained.  For instance methods in
                    class namespaces the bound first parameter (``self``)
                    is NOT listed; for classes the constructor parameters
                    are listed (no ``self``/``cls``).
    var_positional  true if the signature has ``*args``
    var_keyword     true if the signature has ``**kwargs``

and, where applicable, extra keys:

    signature_source  "inspect" | "text_signature" | "docstring"
    signature         the signature text (memory addresses stripped)
    kwonly / posonly  names of keyword-only / positional-only params
    required          params without a default (not */** ones)
    doc_params        for callables whose introspected signature is just
                      ``(*args, **kwargs)``-like: params documented in the
                      docstring (e.g. ``ndarray.__init__(shape, dtype...)``)
    binding           class namespaces: "instance" | "static" | "class"
    descriptor        class namespaces, kind "other": "property" for
                      properties / getset / member descriptors
    defined_in        class namespaces: ``__qualname__`` of the class in
                      the MRO that defines the attribute ("object" for
                      plain inherited object dunders)
    mro               kind "class": fully qualified names of the MRO
    module            ``__module__`` of functions / classes
    value / value_repr  kind "constant": the value (JSON-native) or repr
    nin / nout / nargs / call_keywords / call_private_keywords
                      kind "ufunc" (see UFUNC_CALL_KEYWORDS below)
    lazy              name provided by the module's ``__getattr__``
    requires_import   name is a submodule that is NOT an attribute after a
                      plain ``import cupy``; it only appears once the
                      submodule itself has been imported
    unavailable       "ExcType: message" when accessing the name failed

A namespace that cannot be listed at all is recorded as
``{"__unavailable__": "reason"}``.  Top-level ``requires_import`` lists
module namespaces that are not attributes of their parent after a plain
``import cupy`` (e.g. ``cupy.cuda.nccl``).
"""

import importlib
import inspect
import json
import math
import os
import re
import sys
import types
import warnings

# ---------------------------------------------------------------------------
# What to list
# ---------------------------------------------------------------------------

MODULE_NAMESPACES = [
    'cupy',
    'cupy.cuda',
    'cupy.cuda.runtime',
    'cupy.cuda.driver',
    'cupy.cuda.device',
    'cupy.cuda.memory',
    'cupy.cuda.compiler',
    'cupy.cuda.stream',
    'cupy.cuda.graph',
    'cupy.cuda.nccl',
    'cupy.random',
    'cupy.linalg',
    'cupy.fft',
]

# namespace name -> how to find the class (dotted path from an importable
# module; attribute access after the module part).
CLASS_NAMESPACES = {
    'cupy.ndarray': 'cupy.ndarray',
    # The type of ``ndarray.flags`` (cannot instantiate an array without a
    # GPU, so it is taken from its defining module).
    'cupy.ndarray.flags': 'cupy._core.flags.Flags',
    'cupy.ufunc': 'cupy.ufunc',
    'cupy.random.Generator': 'cupy.random.Generator',
    'cupy.random.RandomState': 'cupy.random.RandomState',
    'cupy.RawModule': 'cupy.RawModule',
    'cupy.RawKernel': 'cupy.RawKernel',
    'cupy.ElementwiseKernel': 'cupy.ElementwiseKernel',
    'cupy.cuda.Device': 'cupy.cuda.Device',
    'cupy.cuda.Stream': 'cupy.cuda.Stream',
    'cupy.cuda.ExternalStream': 'cupy.cuda.ExternalStream',
    'cupy.cuda.Event': 'cupy.cuda.Event',
    'cupy.cuda.Graph': 'cupy.cuda.Graph',
    'cupy.cuda.Function': 'cupy.cuda.Function',
    'cupy.cuda.MemoryPointer': 'cupy.cuda.MemoryPointer',
    'cupy.cuda.MemoryPool': 'cupy.cuda.MemoryPool',
    'cupy.cuda.PinnedMemoryPool': 'cupy.cuda.PinnedMemoryPool',
    'cupy.cuda.memory.OutOfMemoryError': 'cupy.cuda.memory.OutOfMemoryError',
    'cupy.cuda.runtime.CUDARuntimeError':
        'cupy.cuda.runtime.CUDARuntimeError',
    'cupy.cuda.compiler.CompileException': 'cupy.cuda.compiler.CompileException',
    'cupy.random.XORWOW': 'cupy.random.XORWOW',
    'cupy.cuda.nccl.NcclCommunicator': 'cupy.cuda.nccl.NcclCommunicator',
    'cupy.cuda.nccl.NcclError': 'cupy.cuda.nccl.NcclError',
}

# The NCCL functions CuPy's nccl extension links against (CuPy 14.2). Without libnccl the
# extension cannot be imported and ``cupy.cuda.nccl`` is only ``available = False``; to list
# its API anyway, a stub libnccl.so.2 defining these symbols (never called) is preloaded.
# A symbol a later CuPy adds is found from the import error and added.
NCCL_SYMBOLS = [
    'ncclAllGather', 'ncclAllReduce', 'ncclBcast', 'ncclBroadcast', 'ncclCommAbort',
    'ncclCommCount', 'ncclCommCuDevice', 'ncclCommDestroy', 'ncclCommGetAsyncError',
    'ncclCommInitAll', 'ncclCommInitRankConfig', 'ncclCommSplit', 'ncclCommUserRank',
    'ncclGetErrorString', 'ncclGetUniqueId', 'ncclGetVersion', 'ncclGroupEnd',
    'ncclGroupStart', 'ncclRecv', 'ncclReduce', 'ncclReduceScatter', 'ncclSend',
]

# Names served by a module-level ``__getattr__`` (so they are not in dir()
# until first accessed).  Read from cupy/random/__init__.py and
# cupy/cuda/__init__.py of CuPy 14.2.0.
LAZY_NAMES = {
    'cupy.random': ['Generator'],
    'cupy.cuda': ['cublas', 'cufft', 'curand', 'cusolver', 'cusparse',
                  'jitify', 'nvtx_enabled'],
}

# Keyword arguments accepted by ``cupy._core._kernel.ufunc.__call__``.
# Source: cupy/_core/_kernel.pyx (tag v14.2.0), ``cdef class ufunc``,
# ``def __call__(self, *args, **kwargs)``:
#     out = kwargs.pop('out', None)
#     where = kwargs.pop('_where', None)
#     dtype = kwargs.pop('dtype', None)
#     casting = kwargs.pop('casting', self._default_casting)
#     ...
#     if kwargs:
#         raise TypeError('Wrong arguments %s' % kwargs)
# Positional arguments: ``self.nin <= len(args) <= self.nargs`` (inputs,
# optionally followed by the outputs).  ``where=`` (public numpy name) is
# NOT accepted; only the private ``_where``.  Also matches the docstring
# made by ``_ufunc_doc_signature_formatter`` in the same file, e.g.
# "add(x1, x2, /, out=None, \*, casting='same_kind', dtype=None)".
UFUNC_CALL_KEYWORDS = ['out', 'dtype', 'casting']
UFUNC_CALL_PRIVATE_KEYWORDS = ['_where']

_ADDR_RE = re.compile(r' at 0x[0-9a-fA-F]+')
_SIG_LINE_RE = re.compile(r'^\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*(->.*)?$')


def _clean(text):
    return _ADDR_RE.sub('', text)


def _exc_text(exc):
    # Only the first clause: the rest lists the folders searched, which differ per environment.
    msg = ' '.join(str(exc).split()).split(', ')[0].split(' listdir(')[0]
    return _clean(f'{type(exc).__name__}: {msg}')


# ---------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------

def _split_top_level(text):
    """Split ``text`` at commas that are not nested in brackets/quotes."""
    parts, depth, quote, cur = [], 0, None, []
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == '\\' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in '\'"':
            quote = ch
            cur.append(ch)
        elif ch in '([{<':
            depth += 1
            cur.append(ch)
        elif ch in ')]}>':
            depth -= 1
            cur.append(ch)
        elif ch == ',' and depth == 0:
            parts.append(''.join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append(''.join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_param_text(text):
    """Parse the inside of ``name(...)`` text into a signature dict.

    Understands Python (``a: int = 1``) and Cython (``str code=None``)
    styles, ``*``, ``\\*`` (reST escaped), ``/``, ``*args``, ``**kw``.
    Returns None if it does not look like a parameter list.
    """
    params, kwonly, posonly, required = [], [], [], []
    var_pos = var_kw = False
    in_kwonly = False
    text = text.replace('\\*', '*')
    # numpy-style optional groups: "x[, out1, out2]" -> "x, out1, out2"
    text = text.replace('[,', ',').replace('[', '').replace(']', '')
    for tok in _split_top_level(text):
        if tok == '*':
            in_kwonly = True
            continue
        if tok == '/':
            posonly.extend(params)
            continue
        if tok in ('...', '\u2026'):
            var_pos = True
            continue
        name_part, has_default = tok, False
        pieces = _split_eq(tok)
        if len(pieces) == 2:
            name_part, has_default = pieces[0].strip(), True
        if ':' in name_part:                       # python annotation
            name_part = name_part.split(':', 1)[0].strip()
        words = name_part.split()
        if not words:
            return None
        name = words[-1]                           # cython "type name"
        if name.startswith('**'):
            var_kw = True
            continue
        if name.startswith('*'):
            var_pos = True
            in_kwonly = True
            continue
        name = name.lstrip('&')
        if not re.match(r'^[A-Za-z_]\w*$', name):
            return None
        params.append(name)
        if in_kwonly:
            kwonly.append(name)
        if not has_default:
            required.append(name)
    return {'params': params, 'kwonly': kwonly, 'posonly': posonly,
            'required': required, 'var_positional': var_pos,
            'var_keyword': var_kw}


def _split_eq(tok):
    """Split 'a=1' at the first top-level '=' (not '==', not in brackets)."""
    depth, quote = 0, None
    for i, ch in enumerate(tok):
        if quote:
            if ch == quote:
                quote = None
        elif ch in '\'"':
            quote = ch
        elif ch in '([{<':
            depth += 1
        elif ch in ')]}>':
            depth -= 1
        elif ch == '=' and depth == 0:
            if tok[i + 1:i + 2] == '=' or tok[i - 1:i] in '=!<>':
                continue
            return [tok[:i], tok[i + 1:]]
    return [tok]


def _from_inspect(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params, kwonly, posonly, required = [], [], [], []
    var_pos = var_kw = False
    P = inspect.Parameter
    for p in sig.parameters.values():
        if p.kind == P.VAR_POSITIONAL:
            var_pos = True
            continue
        if p.kind == P.VAR_KEYWORD:
            var_kw = True
            continue
        params.append(p.name)
        if p.kind == P.KEYWORD_ONLY:
            kwonly.append(p.name)
        if p.kind == P.POSITIONAL_ONLY:
            posonly.append(p.name)
        if p.default is P.empty:
            required.append(p.name)
    return {'params': params, 'kwonly': kwonly, 'posonly': posonly,
            'required': required, 'var_positional': var_pos,
            'var_keyword': var_kw, 'signature': _clean(str(sig)),
            'signature_source': 'inspect'}


def _from_text_signature(obj):
    ts = getattr(obj, '__text_signature__', None)
    if not isinstance(ts, str) or not ts.startswith('('):
        return None
    inner = ts.strip()[1:-1]
    inner = ', '.join(t.lstrip('$') for t in _split_top_level(inner))
    res = _parse_param_text(inner)
    if res is not None:
        res['signature'] = _clean(ts)
        res['signature_source'] = 'text_signature'
    return res


def _doc_signature_lines(doc):
    """Yield candidate one-line signatures from the top of a docstring."""
    lines = doc.strip('\n').splitlines()
    i = 0
    seen = 0
    while i < len(lines) and seen < 6:
        line = lines[i].strip()
        i += 1
        if not line:
            continue
        seen += 1
        # join continuation lines until the parentheses balance
        while line.count('(') > line.count(')') and i < len(lines):
            line += ' ' + lines[i].strip()
            i += 1
        yield line


def _from_docstring(obj, names):
    doc = getattr(obj, '__doc__', None)
    if not isinstance(doc, str):
        return None
    for line in _doc_signature_lines(doc):
        m = _SIG_LINE_RE.match(line)
        if not m:
            continue
        if m.group(1).split('.')[-1] not in names:
            continue
        res = _parse_param_text(m.group(2))
        if res is None:
            continue
        res['signature'] = _clean(line)
        res['signature_source'] = 'docstring'
        return res
    return None


def _names_for(obj, attr_name):
    names = {attr_name}
    for a in ('__name__', '__qualname__'):
        v = getattr(obj, a, None) if not _is_lazy_module(obj) else None
        if isinstance(v, str):
            names.add(v.split('.')[-1])
    return names


def get_signature(obj, attr_name, drop_first=False, is_class=False):
    """Best-effort signature dict, or None."""
    names = _names_for(obj, attr_name)
    if is_class:
        names.add('__init__')
    res = _from_inspect(obj)
    if res is None:
        res = _from_text_signature(obj)
    if res is None:
        res = _from_docstring(obj, names)
        if res is None and is_class:
            init = getattr(obj, '__init__', None)
            if init is not None and init is not object.__init__:
                res = _from_docstring(init, names)
                if res is not None and res['params'][:1] == ['self']:
                    _drop_first(res)
        if res is not None:
            # Docstring signatures may or may not list self: drop it only
            # when it is spelled out.
            if res['params'][:1] in (['self'], ['cls']):
                _drop_first(res)
            drop_first = False
    if res is None:
        return None
    if drop_first and res['params']:
        _drop_first(res)
    if res['var_positional'] and res['var_keyword']:
        # (*args, **kwargs)-like: look for a documented signature too.
        doc = _from_docstring(obj, names)
        if doc is None and is_class:
            doc = _from_docstring(obj, {'__init__'} | names)
        if doc is not None:
            if doc['params'][:1] in (['self'], ['cls']):
                _drop_first(doc)
            if doc['params'] != res['params'] or not doc['var_keyword']:
                res['doc_params'] = doc['params']
                res['doc_signature'] = doc['signature']
    return res


def _drop_first(res):
    first = res['params'].pop(0)
    for k in ('kwonly', 'posonly', 'required'):
        if first in res[k]:
            res[k].remove(first)


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------

def _is_lazy_module(obj):
    # importlib.util._LazyModule: do not touch attributes (that would
    # trigger the import of e.g. cupy.testing).
    return issubclass(type(obj), types.ModuleType)


def _is_cupy_ufunc(obj):
    from cupy._core._kernel import ufunc
    return isinstance(obj, ufunc)


_CONST_TYPES = (bool, int, float, complex, str, bytes, type(None))


def _constant_value(obj, entry):
    try:
        import numpy
        if isinstance(obj, numpy.generic):
            obj = obj.item()
    except Exception:
        pass
    if isinstance(obj, float) and not math.isfinite(obj):
        entry['value_repr'] = repr(obj)
    elif isinstance(obj, (bool, int, float, str, type(None))):
        entry['value'] = obj
    else:
        entry['value_repr'] = _clean(repr(obj))


def _qualname(cls):
    return '{}.{}'.format(getattr(cls, '__module__', '?'),
                      getattr(cls, '__qualname__', cls.__name__))


def describe(obj, attr_name):
    """ENTRY for a module-level (or free-standing) object."""
    entry = {'kind': 'other', 'params': None, 'var_positional': False,
             'var_keyword': False}
    if _is_lazy_module(obj):
        entry['kind'] = 'module'
        return entry
    if _is_cupy_ufunc(obj):
        entry['kind'] = 'ufunc'
        for a in ('nin', 'nout', 'nargs'):
            v = getattr(obj, a, None)
            if isinstance(v, int):
                entry[a] = v
        entry['call_keywords'] = list(UFUNC_CALL_KEYWORDS)
        entry['call_private_keywords'] = list(UFUNC_CALL_PRIVATE_KEYWORDS)
        # __call__ takes *args (nin..nargs positionals) and rejects any
        # keyword other than call_keywords (+ private ones).
        entry['var_positional'] = True
        doc = getattr(obj, '__doc__', None) or ''
        first = doc.strip().splitlines()[0] if doc.strip() else ''
        if _SIG_LINE_RE.match(first):
            entry['signature'] = first
            entry['signature_source'] = 'docstring'
        return entry
    if isinstance(obj, type):
        entry['kind'] = 'class'
        entry['module'] = getattr(obj, '__module__', None)
        entry['mro'] = [_qualname(c) for c in obj.__mro__]
        sig = get_signature(obj, attr_name, is_class=True)
    elif inspect.isroutine(obj):
        entry['kind'] = 'function'
        mod = getattr(obj, '__module__', None)
        if isinstance(mod, str):
            entry['module'] = mod
        sig = get_signature(obj, attr_name)
    elif isinstance(obj, _CONST_TYPES) or _is_numpy_scalar(obj):
        entry['kind'] = 'constant'
        _constant_value(obj, entry)
        return entry
    else:
        entry['type'] = _qualname(type(obj))
        sig = get_signature(obj, attr_name) if callable(obj) else None
    if sig is not None:
        entry.update(sig)
    return entry


def _is_numpy_scalar(obj):
    try:
        import numpy
        return isinstance(obj, numpy.generic)
    except Exception:
        return False


def describe_member(cls, name):
    """ENTRY for attribute ``name`` of class ``cls``."""
    defined_in = 'object'
    for k in cls.__mro__:
        if name in vars(k):
            defined_in = k.__qualname__
            break
    try:
        static = inspect.getattr_static(cls, name)
    except AttributeError as e:
        return {'kind': 'other', 'params': None, 'var_positional': False,
                'var_keyword': False, 'unavailable': _exc_text(e),
                'defined_in': defined_in}
    entry = {'kind': 'other', 'params': None, 'var_positional': False,
             'var_keyword': False, 'defined_in': defined_in}
    sig = None
    if isinstance(static, staticmethod):
        entry['kind'] = 'function'
        entry['binding'] = 'static'
        sig = get_signature(static.__func__, name)
    elif isinstance(static, classmethod) or type(static).__name__ == \
            'classmethod_descriptor':
        entry['kind'] = 'function'
        entry['binding'] = 'class'
        try:
            bound = getattr(cls, name)
            sig = get_signature(bound, name)
        except Exception as e:
            entry['unavailable'] = _exc_text(e)
    elif isinstance(static, (property, types.GetSetDescriptorType,
                             types.MemberDescriptorType)):
        entry['descriptor'] = 'property'
        entry['writable'] = _is_writable(static)
    elif isinstance(static, type):
        entry.update(describe(static, name))
        entry['defined_in'] = defined_in
        return entry
    elif inspect.isroutine(static) or type(static).__name__ in (
            'cython_function_or_method', 'fused_cython_function'):
        entry['kind'] = 'function'
        entry['binding'] = 'instance'
        sig = get_signature(static, name, drop_first=True)
    elif isinstance(static, _CONST_TYPES) or _is_numpy_scalar(static):
        entry['kind'] = 'constant'
        _constant_value(static, entry)
    else:
        entry['type'] = _qualname(type(static))
        if callable(static):
            sig = get_signature(static, name)
    if sig is not None:
        entry.update(sig)
        if (name in ('__init__', '__new__') and sig['var_positional']
                and sig['var_keyword'] and 'doc_params' not in sig):
            # Slot wrappers say (*args, **kwargs); use the class-level
            # (docstring) constructor signature as the documented one.
            csig = get_signature(cls, cls.__name__, is_class=True)
            if csig is not None:
                if 'doc_params' in csig:
                    entry['doc_params'] = csig['doc_params']
                    entry['doc_signature'] = csig['doc_signature']
                elif not (csig['var_positional'] and csig['var_keyword']):
                    entry['doc_params'] = csig['params']
                    entry['doc_signature'] = csig['signature']
    return entry


def _is_writable(desc):
    if isinstance(desc, property):
        return desc.fset is not None
    # getset / member descriptors: no reliable introspection without an
    # instance; record null.
    return None


# ---------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------

def _resolve(path):
    parts = path.split('.')
    for i in range(len(parts), 0, -1):
        modname = '.'.join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except ImportError:
            continue
        for a in parts[i:]:
            obj = getattr(obj, a)
        return obj
    raise ImportError(f'cannot import {path}')


def list_module(mod, modname, baseline):
    out = {}
    lazy = LAZY_NAMES.get(modname, [])
    names = set(n for n in dir(mod) if not n.startswith('_')) | set(lazy)
    for name in sorted(names):
        try:
            obj = getattr(mod, name)
        except Exception as e:  # lazy attribute that cannot be loaded
            entry = {'kind': 'other', 'params': None,
                     'var_positional': False, 'var_keyword': False,
                     'unavailable': _exc_text(e)}
        else:
            entry = describe(obj, name)
        if name in lazy:
            entry['lazy'] = True
        elif baseline is not None and name not in baseline:
            entry['requires_import'] = True
        out[name] = entry
    return out


def list_class(cls):
    out = {}
    for name in sorted(dir(cls)):
        if name.startswith('_') and not (name.startswith('__') and
                                         name.endswith('__')):
            continue
        out[name] = describe_member(cls, name)
    return out


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(f'usage: {argv[0]} OUTPUT.json\n')
        return 2
    warnings.simplefilter('ignore')

    # Running this file puts its own folder (which holds the CuPy *double*
    # package ``cupy/``) first on sys.path: drop it so the REAL cupy is
    # imported, and refuse to run if the double is picked up anyway.
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path
                   if os.path.realpath(p or os.curdir) != here]
    import cupy  # noqa: F401  (the real one)
    real_file = os.path.realpath(getattr(cupy, '__file__', '') or '')
    if real_file.startswith(here + os.sep) or not hasattr(cupy, '_core') \
            or not hasattr(sys.modules.get('cupy._core.core'), 'ndarray'):
        sys.stderr.write(f'error: imported cupy from {real_file!r}, which is not the '
                         'real CuPy package\n')
        return 1

    _stub_libnccl()

    # Snapshot which names each module exposes after a plain
    # ``import cupy`` (before this script imports more submodules).
    baseline = {}
    for modname in MODULE_NAMESPACES:
        try:
            m = _resolve_attr_only(modname)
        except Exception:
            continue
        baseline[modname] = set(dir(m))

    namespaces = {}
    modules = {}
    requires_import = []
    for modname in MODULE_NAMESPACES:
        try:
            # e.g. cupy.cuda.driver is an attribute (cupy_backends module),
            # not an importable submodule.
            mod = _resolve_attr_only(modname)
            if not isinstance(mod, types.ModuleType):
                raise ImportError('not a module')
        except Exception:
            try:
                mod = importlib.import_module(modname)
            except Exception as e:
                namespaces[modname] = {'__unavailable__': _exc_text(e)}
                continue
        modules[modname] = mod
    # Resolve lazy names before listing anything, so that the listing does
    # not depend on the order namespaces are processed in.
    for modname, lazy in LAZY_NAMES.items():
        for name in lazy:
            try:
                getattr(modules[modname], name)
            except Exception:
                pass
    for modname, mod in modules.items():
        namespaces[modname] = list_module(mod, modname,
                                          baseline.get(modname))
        if modname not in baseline:
            requires_import.append(modname)

    for ns, path in CLASS_NAMESPACES.items():
        try:
            cls = _resolve(path)
        except Exception as e:
            namespaces[ns] = {'__unavailable__': _exc_text(e)}
            continue
        if not isinstance(cls, type):
            namespaces[ns] = {'__unavailable__': f'not a class: {cls!r}'}
            continue
        namespaces[ns] = list_class(cls)

    result = {
        'cupy_version': cupy.__version__,
        'generator': {
            'python': '{}.{}'.format(*sys.version_info[:2]),
            'ufunc_call_keywords_source':
                'cupy/_core/_kernel.pyx v14.2.0 ufunc.__call__',
            'notes': [
                'params exclude self for instance methods and classes',
                'module namespaces listed in requires_import are not '
                'attributes of their parent after a plain "import cupy"; '
                'they appear once imported explicitly',
            ],
        },
        'requires_import': sorted(requires_import),
        'namespaces': namespaces,
    }
    text = json.dumps(result, sort_keys=True, indent=1, allow_nan=False)
    with open(argv[1], 'w') as f:
        f.write(text + '\n')
    return 0


def _stub_libnccl():
    """Preload a stub libnccl.so.2 (see NCCL_SYMBOLS) unless a real one can be loaded."""
    import ctypes
    import shutil
    import subprocess
    import tempfile

    probe = 'import cupy_backends.cuda.libs.nccl'
    if subprocess.run([sys.executable, '-c', probe], capture_output=True).returncode == 0:
        return
    compiler = shutil.which('cc') or shutil.which('gcc') or shutil.which('g++')
    if compiler is None:
        sys.stderr.write('warning: no C compiler for a stub libnccl; cupy.cuda.nccl is '
                         'listed as unavailable\n')
        return
    folder = tempfile.mkdtemp(prefix='stub-nccl-')
    library = os.path.join(folder, 'libnccl.so.2')
    symbols = list(NCCL_SYMBOLS)
    for _ in range(100):
        source = os.path.join(folder, 'stub.c')
        with open(source, 'w') as f:
            f.writelines(f'extern "C" int {name}(void) {{ return 3; }}\n'
                         if compiler.endswith('++') else f'int {name}(void) {{ return 3; }}\n'
                         for name in symbols)
        subprocess.run([compiler, '-shared', '-fPIC', '-Wl,-soname,libnccl.so.2', '-o',
                        library, source], check=True)
        check = (f'import ctypes; ctypes.CDLL({library!r}, mode=ctypes.RTLD_GLOBAL); '
                 f'{probe}')
        result = subprocess.run([sys.executable, '-c', check], capture_output=True, text=True)
        missing = re.search(r'undefined symbol: (\w+)', result.stderr)
        if result.returncode == 0 or missing is None:
            break
        symbols.append(missing.group(1))
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)


def _resolve_attr_only(path):
    """Resolve ``path`` by attribute access only (no imports)."""
    parts = path.split('.')
    obj = sys.modules[parts[0]]
    for a in parts[1:]:
        obj = getattr(obj, a)
    return obj


if __name__ == '__main__':
    sys.exit(main(sys.argv))
