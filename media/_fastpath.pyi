"""Type stub of the compiled RTP receive hot path (media/_fastpath.c)."""

from typing import Any

MMSG_VLEN: int

def recv_batch(
    fd: int, max_count: int, size: int, addresses: bool, /
) -> tuple[list[bytes], Any]: ...
def ssrc_runs(datagrams: list[bytes], /) -> list[tuple[int, int, int]]: ...
def ingest_run(
    ingest: Any, datagrams: list[bytes], start: int, now: float, ps_batch: int, /
) -> tuple[int, int]: ...
def split_rfc4571(buffer: bytes | bytearray | memoryview, /) -> tuple[list[bytes], int, int, int]: ...
