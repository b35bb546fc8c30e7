"""kv: a minimal key/value contract any registered identity may call.

Used by tests and benchmarks, and the model for contract authors: every public function
takes `ctx` and keyword arguments from the transaction's JSON args, and returns a
JSON-serialisable value. State lives in this contract's own namespace.
"""

MAX_KEY_LENGTH = 256


def _check_key(key):
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError("key must be a non-empty string of at most 256 characters")


def put(ctx, key, value):
    _check_key(key)
    previous = ctx.get(key)
    ctx.put(key, value)
    ctx.emit("put", {"key": key})
    return {"key": key, "created": previous is None}


def get(ctx, key):
    _check_key(key)
    return ctx.get(key)


def delete(ctx, key):
    _check_key(key)
    if ctx.get(key) is None:
        raise ValueError("no such key: " + key)
    ctx.delete(key)
    ctx.emit("delete", {"key": key})
    return {"key": key}


def list_keys(ctx, prefix="", limit=100):
    keys = []
    for key, _value in ctx.range(prefix):
        if len(keys) >= limit:
            break
        keys.append(key)
    return keys
