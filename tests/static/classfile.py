"""Which methods the classes of a jar call, read from their constant pools (JVM spec, chapter 4.4).

A class file lists every method it references (to invoke it, or in a method handle) as a Methodref or
InterfaceMethodref entry naming the owner class and the method. The IAM test reads the AWS SDK client calls of the
KCL's jars this way, without a JDK.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["class_method_references", "method_references"]

# tag -> size in bytes of the entry after its tag (Utf8 is variable; Long and Double take two pool slots)
_FIXED_SIZES = {3: 4, 4: 4, 5: 8, 6: 8, 7: 2, 8: 2, 9: 4, 10: 4, 11: 4, 12: 4, 15: 3, 16: 2, 17: 4, 18: 4, 19: 2, 20: 2}
_UTF8, _CLASS, _METHODREF, _INTERFACE_METHODREF, _NAME_AND_TYPE = 1, 7, 10, 11, 12


def _references(data: bytes) -> Iterator[tuple[str, str]]:
    magic, _minor, _major, count = struct.unpack_from(">IHHH", data, 0)
    if magic != 0xCAFEBABE:
        raise ValueError("not a class file")
    pool: dict[int, tuple[int, object]] = {}
    offset, index = 10, 1
    while index < count:
        tag = data[offset]
        offset += 1
        if tag == _UTF8:
            (length,) = struct.unpack_from(">H", data, offset)
            pool[index] = (tag, data[offset + 2 : offset + 2 + length].decode("utf-8", "replace"))
            offset += 2 + length
        else:
            size = _FIXED_SIZES[tag]
            if tag in (_METHODREF, _INTERFACE_METHODREF, _NAME_AND_TYPE):
                pool[index] = (tag, struct.unpack_from(">HH", data, offset))
            elif tag == _CLASS:
                pool[index] = (tag, struct.unpack_from(">H", data, offset)[0])
            offset += size
        index += 2 if tag in (5, 6) else 1

    def utf8(i: int) -> str:
        return str(pool[i][1])

    for tag, value in pool.values():
        if tag in (_METHODREF, _INTERFACE_METHODREF):
            class_index, name_and_type = value  # type: ignore[misc]
            owner = utf8(pool[class_index][1])  # type: ignore[arg-type]
            name = utf8(pool[name_and_type][1][0])  # type: ignore[index]
            yield owner, name


def class_method_references(jar: Path, owner_prefixes: tuple[str, ...]) -> dict[str, set[tuple[str, str]]]:
    """Per class of ``jar`` (``a/b/C``, nested classes under their outer class), the ``(owner class, method name)``
    it references whose owner starts with one of ``owner_prefixes``; classes with none are left out."""
    found: dict[str, set[tuple[str, str]]] = {}
    with zipfile.ZipFile(jar) as archive:
        for name in archive.namelist():
            if name.endswith(".class"):
                refs = {ref for ref in _references(archive.read(name)) if ref[0].startswith(owner_prefixes)}
                if refs:
                    found.setdefault(name.removesuffix(".class").split("$")[0], set()).update(refs)
    return found


def method_references(jar: Path, owner_prefix: str) -> set[tuple[str, str]]:
    """``(owner class, method name)`` of every method referenced in ``jar`` whose owner starts with
    ``owner_prefix`` (slashes, as in ``software/amazon/awssdk/services/``)."""
    found: set[tuple[str, str]] = set()
    with zipfile.ZipFile(jar) as archive:
        for name in archive.namelist():
            if name.endswith(".class"):
                found.update(ref for ref in _references(archive.read(name)) if ref[0].startswith(owner_prefix))
    return found
