"""Size-charging guards and the builtins a contract sees.

The instrumentation (`instrument.py`) routes the operations whose cost is not one step —
`+ - * ** << %`, `in`, slicing, f-strings, and the sized methods of `checker.SIZED_METHODS`
— through the functions made here, which charge the meter by the size of the result
*before* building it, or refuse it (`ContractFault`) when it would exceed a hard ceiling.
Builtins that materialise an iterable (`list`, `sorted`, `sum`, ...) charge per element.

Everything here is bound to one `Meter`, which the executor resets per invocation.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterable
from typing import Any

from node.codes import TxCode
from node.execution.sandbox import gas
from node.execution.sandbox.errors import ContractFault

Guards = dict[str, Any]


class PermissionDenied(Exception):
    """Raised by a contract to end its call with PERMISSION_DENIED."""


def _fault(message: str) -> ContractFault:
    return ContractFault(TxCode.CONTRACT_ERROR, message)


_SEQUENCES = (list, tuple)
_DATA_SCALARS = (int, float, bool, type(None))


def _seq_cost(value: Any) -> int:
    """Gas to copy `value` once, proportional to its length."""
    if isinstance(value, str):
        return len(value) // gas.CHARS_PER_GAS
    if isinstance(value, (list, tuple, dict, set, frozenset, range)):
        return len(value) // gas.ITEMS_PER_GAS
    return 0


SAFE_MATH = types.SimpleNamespace(
    floor=math.floor,
    ceil=math.ceil,
    trunc=math.trunc,
    gcd=math.gcd,
    sqrt=math.sqrt,
    fabs=math.fabs,
    isfinite=math.isfinite,
    isnan=math.isnan,
    isinf=math.isinf,
    pi=math.pi,
    e=math.e,
    inf=math.inf,
)


_SCALAR_SIZES: dict[type, int] = {bool: 5, type(None): 5, float: 24}


def value_size(meter: gas.Meter, value: Any, depth: int = 0) -> int:
    """Characters `str(value)` or its JSON would take; charges per container as it walks,
    so walking an exponentially aliased structure runs out of gas instead of time."""
    kind = type(value)
    if kind is str:
        return len(value) + 2
    if kind is int:
        return int(value.bit_length()) // 3 + 2
    scalar = _SCALAR_SIZES.get(kind)
    if scalar is not None:
        return scalar
    if depth >= gas.MAX_VALUE_DEPTH:
        raise _fault(f"value nested deeper than {gas.MAX_VALUE_DEPTH} levels")
    if kind is dict:
        meter.charge(len(value) // gas.ITEMS_PER_GAS + 1)
        size = 2
        for key, item in value.items():
            size += value_size(meter, key, depth + 1) + value_size(meter, item, depth + 1) + 4
        return size
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        meter.charge(len(value) // gas.ITEMS_PER_GAS + 1)
        size = 2
        for item in value:
            size += value_size(meter, item, depth + 1) + 2
        return size
    # Functions, iterators, ctx...: their text holds memory addresses, which differ
    # between nodes; refusing keeps results deterministic.
    raise _fault(f"cannot convert a {kind.__name__} to text")


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
LONG_STR = 64
BIG_INT_BITS = 2048


def structure_cost(meter: gas.Meter, value: Any, depth: int = 0) -> None:
    """Charges for what `==`, `<`, `in` and `hash()` do in C with `value`: visit every
    element. Aliasing cannot cheat (`a = [a, a]` 30 times is 2**30 visits, and runs out of
    gas), and nesting deeper than MAX_VALUE_DEPTH is refused outright."""
    kind = type(value)
    if kind is str:
        if len(value) > LONG_STR:
            meter.charge(len(value) // gas.CHARS_PER_GAS)
        return
    if kind not in _CONTAINERS:
        return
    if depth >= gas.MAX_VALUE_DEPTH:
        raise _fault(f"value nested deeper than {gas.MAX_VALUE_DEPTH} levels")
    meter.charge(len(value) // gas.ITEMS_PER_GAS + 1)
    for item in value.items() if kind is dict else value:
        if type(item) in _CONTAINERS or type(item) is str:
            structure_cost(meter, item, depth + 1)


def charged_key(meter: gas.Meter, key: Any) -> Any:
    """Wraps a sort/min/max key function so the keys it returns are charged for the
    comparisons C will make between them."""
    if key is None:
        return None

    def charged(item: Any) -> Any:
        result = key(item)
        structure_cost(meter, result)
        return result

    return charged


def charge_value(meter: gas.Meter, value: Any) -> None:
    """Charges for serialising `value` before it is serialised (aliasing cannot cheat)."""
    meter.charge(value_size(meter, value) // gas.CHARS_PER_GAS)


def make_guards(meter: gas.Meter) -> tuple[Guards, dict[str, Any]]:
    """Returns (`__ml_*` helpers for module globals, the contract's `__builtins__`)."""
    charge = meter.charge

    def to_str(value: Any, conversion: int = -1) -> str:
        if type(value) is str and conversion == -1:
            return value
        charge_value(meter, value)
        return repr(value) if conversion == ord("r") else str(value)

    def check_int(result: Any) -> Any:
        if type(result) is int and result.bit_length() > gas.MAX_INT_BITS:
            raise _fault(f"integer result larger than {gas.MAX_INT_BITS} bits")
        return result

    def add(a: Any, b: Any) -> Any:
        ta = type(a)
        if ta is str or ta is list or ta is tuple:
            charge(_seq_cost(a) + _seq_cost(b))
            return a + b
        return check_int(a + b)

    def sub(a: Any, b: Any) -> Any:
        return check_int(a - b)

    def repeat_cost(seq: Any, times: Any) -> None:
        if type(times) is int and times > 0:
            if isinstance(seq, str):
                charge(len(seq) * times // gas.CHARS_PER_GAS)
            else:
                charge(len(seq) * times // gas.ITEMS_PER_GAS)

    def mul(a: Any, b: Any) -> Any:
        if isinstance(a, (str, list, tuple)):
            repeat_cost(a, b)
        elif isinstance(b, (str, list, tuple)):
            repeat_cost(b, a)
        elif type(a) is int and type(b) is int:
            bits = a.bit_length() + b.bit_length()
            if bits > gas.MAX_INT_BITS:
                raise _fault(f"integer result larger than {gas.MAX_INT_BITS} bits")
            charge(bits // gas.INT_BITS_PER_GAS)
        return a * b

    def power(a: Any, b: Any) -> Any:
        if isinstance(a, float) or isinstance(b, float):
            raise _fault("float powers are not deterministic across platforms; use math.sqrt")
        if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
            if b > gas.MAX_INT_BITS or a.bit_length() * b > gas.MAX_INT_BITS:
                raise _fault(f"integer result larger than {gas.MAX_INT_BITS} bits")
            charge(a.bit_length() * b // gas.INT_BITS_PER_GAS)
        return a**b

    def lshift(a: Any, b: Any) -> Any:
        too_big = b > gas.MAX_INT_BITS or a.bit_length() + b > gas.MAX_INT_BITS
        if isinstance(a, int) and isinstance(b, int) and b > 0 and too_big:
            raise _fault(f"integer result larger than {gas.MAX_INT_BITS} bits")
        return a << b

    def division_cost(a: Any, b: Any) -> None:
        # Long division is quadratic in the operands' sizes; small ints cost nothing extra.
        if type(a) is int and type(b) is int and a.bit_length() > BIG_INT_BITS:
            charge((a.bit_length() // 64) * (b.bit_length() // 64 + 1) // 8)

    def mod(a: Any, b: Any) -> Any:
        if isinstance(a, str):
            raise _fault("%-formatting is not allowed; use f-strings")
        division_cost(a, b)
        return a % b

    def floordiv(a: Any, b: Any) -> Any:
        division_cost(a, b)
        return a // b

    def operand(value: Any) -> Any:
        """Wraps every comparison operand and every computed key or index."""
        kind = type(value)
        if kind is str:
            if len(value) > LONG_STR:
                charge(len(value) // gas.CHARS_PER_GAS)
        elif kind in _CONTAINERS:
            structure_cost(meter, value)
        return value

    def contains(container: Any, item: Any) -> bool:
        operand(item)
        if isinstance(container, (list, tuple)):
            structure_cost(meter, container)
        elif isinstance(container, str):
            charge(len(container) // gas.CHARS_PER_GAS + 1)
        else:
            charge(1)
        return item in container

    def slice_(obj: Any, lo: Any, hi: Any, step: Any) -> Any:
        if isinstance(obj, (str, list, tuple, range)):
            n = len(range(*slice(lo, hi, step).indices(len(obj))))
            charge(n // (gas.CHARS_PER_GAS if isinstance(obj, str) else gas.ITEMS_PER_GAS))
        return obj[lo:hi:step]

    def materialise(items: Any) -> Any:
        """Charges for an iterable about to be copied; iterators are charged per element."""
        if isinstance(items, (str, list, tuple, dict, set, frozenset, range)):
            charge(_seq_cost(items))
            return items
        if isinstance(items, (types.GeneratorType, map, filter, zip, enumerate, reversed)):
            return [item for item in items if meter.step()]
        if isinstance(items, (type({}.keys()), type({}.values()), type({}.items()))):
            charge(len(items))
            return items
        raise _fault(f"cannot iterate over a {type(items).__name__}")

    def method(obj: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, type):
            raise _fault(f"unbound method calls like {obj.__name__}.{name}() are not allowed")
        if isinstance(obj, str):
            return _str_method(obj, name, args, kwargs)
        if isinstance(obj, (list, dict)):
            if name in ("extend", "update") and args:
                args = (materialise(args[0]), *args[1:])
            size = len(obj)
            if name in ("sort", "index", "count", "remove"):  # element comparisons
                structure_cost(meter, obj)
                for arg in args:
                    operand(arg)
            if name == "sort":
                charge(size * max(1, size.bit_length()))
                if "key" in kwargs:
                    kwargs["key"] = charged_key(meter, kwargs["key"])
            elif name == "pop" and isinstance(obj, dict):
                charge(1)
            else:
                charge(size // gas.ITEMS_PER_GAS + 1)
        return getattr(obj, name)(*args, **kwargs)

    def _str_method(s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        charge(len(s) // gas.CHARS_PER_GAS + 1)
        if name == "join":
            parts = list(materialise(args[0])) if args else []
            total = sum(len(p) if isinstance(p, str) else 0 for p in parts)
            charge((total + len(s) * len(parts)) // gas.CHARS_PER_GAS + len(parts))
            return s.join(parts)
        if name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            if isinstance(old, str) and isinstance(new, str):
                hits = len(s) + 1 if old == "" else s.count(old)
                charge(hits * max(0, len(new) - len(old)) // gas.CHARS_PER_GAS + hits)
        result = getattr(s, name)(*args, **kwargs)
        if isinstance(result, list):
            charge(len(result))
        return result

    def aug_item(container: Any, key: Any, op: Callable[[Any, Any], Any], value: Any) -> None:
        container[key] = op(container[key], value)

    def iadd(a: Any, b: Any) -> Any:
        if type(a) is list:
            charge(_seq_cost(b) + 1)
            a += materialise(b)
            return a
        return add(a, b)

    def imul(a: Any, b: Any) -> Any:
        if type(a) is list:
            repeat_cost(a, b)
            a *= b
            return a
        return mul(a, b)

    def reraise_engine_errors(exc: BaseException) -> None:
        """First statement of every `except` body: the contract may not catch these."""
        if isinstance(exc, RecursionError):
            raise _fault("recursion limit reached")
        if isinstance(exc, MemoryError):
            raise exc

    helpers: Guards = {
        "__ml_step": meter.step,
        "__ml_enter": meter.enter,
        "__ml_leave": meter.leave,
        "__ml_add": add,
        "__ml_sub": sub,
        "__ml_mul": mul,
        "__ml_pow": power,
        "__ml_lshift": lshift,
        "__ml_mod": mod,
        "__ml_floordiv": floordiv,
        "__ml_iadd": iadd,
        "__ml_imul": imul,
        "__ml_contains": contains,
        "__ml_cv": operand,
        "__ml_slice": slice_,
        "__ml_method": method,
        "__ml_fmt": to_str,
        "__ml_aug_item": aug_item,
        "__ml_except": reraise_engine_errors,
    }
    builtins = _make_builtins(meter, materialise, to_str)
    return helpers, builtins


def _make_builtins(
    meter: gas.Meter,
    materialise: Callable[[Any], Any],
    to_str: Callable[..., str],
) -> dict[str, Any]:
    charge = meter.charge

    def list_(items: Iterable[Any] = ()) -> list[Any]:
        return list(materialise(items))

    def tuple_(items: Iterable[Any] = ()) -> tuple[Any, ...]:
        return tuple(materialise(items))

    def compared(items: Any) -> list[Any]:
        """Materialises elements that will be hashed or compared, charging for the walk."""
        copied = list(materialise(items))
        structure_cost(meter, copied)
        return copied

    def set_(items: Iterable[Any] = ()) -> set[Any]:
        return set(compared(items))

    def frozenset_(items: Iterable[Any] = ()) -> frozenset[Any]:
        return frozenset(compared(items))

    def dict_(items: Any = (), **kwargs: Any) -> dict[str, Any]:
        charge(len(kwargs))
        if isinstance(items, dict):
            charge(len(items))
            return dict(items, **kwargs)
        return dict(compared(items), **kwargs)

    def sorted_(items: Iterable[Any], *, key: Any = None, reverse: bool = False) -> list[Any]:
        copied = compared(items)
        charge(len(copied) * max(1, len(copied).bit_length()))
        return sorted(copied, key=charged_key(meter, key), reverse=reverse)

    def sum_(items: Iterable[Any], start: Any = 0) -> Any:
        if not isinstance(start, (int, float)):
            raise _fault("sum() only adds numbers; use join or list concatenation")
        result = sum(materialise(items), start)
        if type(result) is int and result.bit_length() > gas.MAX_INT_BITS:
            raise _fault(f"integer result larger than {gas.MAX_INT_BITS} bits")
        return result

    def min_(*args: Any, **kwargs: Any) -> Any:
        if "key" in kwargs:
            kwargs["key"] = charged_key(meter, kwargs["key"])
        return min(compared(args[0] if len(args) == 1 else args), **kwargs)

    def max_(*args: Any, **kwargs: Any) -> Any:
        if "key" in kwargs:
            kwargs["key"] = charged_key(meter, kwargs["key"])
        return max(compared(args[0] if len(args) == 1 else args), **kwargs)

    def divmod_(a: Any, b: Any) -> Any:
        if type(a) is int and type(b) is int and a.bit_length() > BIG_INT_BITS:
            charge((a.bit_length() // 64) * (b.bit_length() // 64 + 1) // 8)
        return divmod(a, b)

    def any_(items: Iterable[Any]) -> bool:
        return any(materialise(items))

    def all_(items: Iterable[Any]) -> bool:
        return all(materialise(items))

    def str_(value: Any = "") -> str:
        return to_str(value)

    def round_(number: Any, ndigits: int | None = None) -> Any:
        if ndigits is not None and not -32 <= ndigits <= 32:
            raise _fault("round() ndigits must be between -32 and 32")
        return round(number, ndigits)

    def int_(value: Any = 0, *base: int) -> int:
        if isinstance(value, str):
            charge(len(value) // gas.CHARS_PER_GAS)
        return int(value, *base)

    # isinstance must understand the guarded constructors as the types they build.
    real_types: dict[Any, type] = {
        list_: list,
        tuple_: tuple,
        set_: set,
        frozenset_: frozenset,
        dict_: dict,
        str_: str,
        int_: int,
    }

    def isinstance_(value: Any, kinds: Any) -> bool:
        if isinstance(kinds, tuple):
            resolved: Any = tuple(real_types.get(k, k) for k in kinds)
        else:
            resolved = real_types.get(kinds, kinds)
        return isinstance(value, resolved)

    def import_(
        name: str, globals_: Any = None, locals_: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if name == "math" and level == 0:
            return SAFE_MATH
        raise ImportError(f"import of {name!r} is not allowed")

    builtins: dict[str, Any] = {
        "__import__": import_,
        "abs": abs,
        "bool": bool,
        "chr": chr,
        "ord": ord,
        "divmod": divmod_,
        "float": float,
        "int": int_,
        "len": len,
        "range": range,
        "enumerate": enumerate,
        "zip": zip,
        "map": map,
        "filter": filter,
        "reversed": reversed,
        "round": round_,
        "isinstance": isinstance_,
        "list": list_,
        "tuple": tuple_,
        "set": set_,
        "frozenset": frozenset_,
        "dict": dict_,
        "sorted": sorted_,
        "sum": sum_,
        "min": min_,
        "max": max_,
        "any": any_,
        "all": all_,
        "str": str_,
        "True": True,
        "False": False,
        "None": None,
        "Exception": Exception,
        "ValueError": ValueError,
        "KeyError": KeyError,
        "IndexError": IndexError,
        "TypeError": TypeError,
        "ZeroDivisionError": ZeroDivisionError,
        "ArithmeticError": ArithmeticError,
        "LookupError": LookupError,
        "AssertionError": AssertionError,
        "OverflowError": OverflowError,
        "PermissionDenied": PermissionDenied,
    }

    return builtins
