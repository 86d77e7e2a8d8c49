"""Compares python/fagen_ctypes.py's structs with the C layout that
tests/ctypes_layout.c prints: every field at the same offset, the same
fields on both sides, the same sizes.  A mirror that only matches in size
passes garbage to libfagen.

    python3 tests/check_ctypes_layout.py BUILD/tests/ctypes_layout
"""
import ctypes
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import fagen_ctypes  # noqa: E402

MIRRORS = {"fagen_strides": fagen_ctypes.FagenStrides,
           "fagen_attention_features": fagen_ctypes.FagenAttentionFeatures,
           "fagen_attention_args": fagen_ctypes.FagenAttentionArgs,
           "fagen_attention_bwd_args": fagen_ctypes.FagenAttentionBwdArgs}


def main():
    c = {}
    for line in subprocess.run([sys.argv[1]], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        struct, field, value = line.split()
        c.setdefault(struct, {})[field] = int(value)
    errors = []
    for struct, cls in MIRRORS.items():
        want = dict(c.get(struct, {}))
        size = want.pop("sizeof", None)
        if size != ctypes.sizeof(cls):
            errors.append(f"{struct}: sizeof {ctypes.sizeof(cls)} in ctypes, {size} in C")
        have = {name: getattr(cls, name).offset for name, _ in cls._fields_}
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                errors.append(f"{struct}.{name}: offset {have.get(name)} in ctypes, "
                              f"{want.get(name)} in C")
    for e in errors:
        print("error:", e)
    print(f"{len(MIRRORS)} structs compared, {len(errors)} differences")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
