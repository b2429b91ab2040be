"""CPU per keepalive on the platform side, in memory: a repeatable figure on a shared machine.

Run by hand (not part of the test suite):

    python benchmarks/keepalive_cpu.py --devices 2000 --rounds 5
    python benchmarks/keepalive_cpu.py --profile /tmp/ka.pstats    # cProfile of the measured rounds
    python benchmarks/keepalive_cpu.py --full-path                  # without the fast path (A/B)

The end-to-end figure (``benchmarks/scale.py``: % of a core over a steady window) moves by several
points with whatever else the machine runs. This one replays the platform's side of a keepalive
without sockets, on the unit tests' in-memory platform (``tests/unit/platform_harness.py``: the
real router, registrar, transaction layer and trace, SQLite registry on an inline runner):

1. ``--devices`` fake devices register with digest (then stop listening, so their onboarding
   queries time out, as the clock is stepped past the catalog timeout);
2. every device's Keepalive MESSAGE (GB/T 28181-2016 §9.6.1, the canonical body) is serialised
   once per round, with a fresh Call-ID, branch and CSeq, as a device sends it;
3. each round hands every datagram to the platform's endpoint (``receive_datagram``: the
   keepalive fast path of ``sip.fastpath`` and the registrar, or with ``--full-path`` parse,
   server transaction, router, registrar; 200 OK, trace) and then flushes the state writer's
   batch (one batch per round: the UPDATE); the clock moves one keepalive interval between
   rounds so the transactions of the previous round have ended.

Prints the process CPU time per keepalive, split into the reactor side (receive → 200 OK) and
the database side (the batch write, off the reactor thread in the real platform), best and
median over the rounds. Multiply by keepalives per second for % of a core: 50,000 devices at
60 s are 833 keepalives/s, so 10 % of a core is 120 µs per keepalive, both sides together.
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip import manscdp  # noqa: E402
from tests.unit.platform_harness import Harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--full-path", action="store_true",
                    help="without the keepalive fast path (sip.fastpath): every keepalive parsed and routed")
    ap.add_argument("--profile", default="", help="write a cProfile of the measured rounds here (pstats)")
    args = ap.parse_args()

    h = Harness()
    if args.full_path:
        h.platform.endpoint.keepalive_handler = None
    devices = []
    for n in range(args.devices):
        device_id = f"3402000000132{n + 1:07d}"
        dev = h.device(device_id, ("UDP", f"10.0.{n // 250}.{n % 250 + 1}", 5060))
        assert dev.register_auth().status == 200
        h.detach(dev)  # its onboarding queries go unanswered from here on
        devices.append(dev)
    h.advance(40)  # onboarding queries time out (Catalog: 30 s), the writer flushes
    # One batch per round, written after the round: at its default (2,000) the writer would start the
    # batch inside the reactor-side timing whenever a round has that many keepalives.
    h.devices.writer.max_batch = args.devices + 1
    h.unrouted.clear()
    h.sent.clear()

    reactor_side: list[float] = []
    db_side: list[float] = []
    profile = cProfile.Profile() if args.profile else None
    for _ in range(args.rounds):
        datagrams = []
        for dev in devices:
            req = dev.request("MESSAGE", body=manscdp.encode_keepalive(dev.next_sn(), dev.device_id),
                              content_type="Application/MANSCDP+xml")
            dev.endpoint.send_request(req, dev.platform_addr, h.clock.seconds())  # adds Via, as a device does
            datagrams += [(data, dev.addr) for data, _ in dev.endpoint.take_output()]
        if profile is not None:
            profile.enable()
        t0 = time.process_time()
        for data, source in datagrams:
            h.deliver(data, source)
        t1 = time.process_time()
        h.devices.writer.flush()  # the inline runner writes the batch now
        t2 = time.process_time()
        if profile is not None:
            profile.disable()
        reactor_side.append((t1 - t0) / len(datagrams))
        db_side.append((t2 - t1) / len(datagrams))
        answered = sum(1 for data, _ in h.sent if data.startswith(b"SIP/2.0 200"))
        assert answered == len(datagrams), f"{answered} of {len(datagrams)} keepalives answered 200"
        h.unrouted.clear()
        h.sent.clear()
        h.advance(60)
    h.close()

    def us(values: list[float]) -> str:
        return f"best {1e6 * min(values):6.1f} µs, median {1e6 * statistics.median(values):6.1f} µs"

    both = [a + b for a, b in zip(reactor_side, db_side, strict=True)]
    print(f"{args.devices} devices x {args.rounds} rounds of keepalives")
    print(f"reactor side (datagram → 200 OK)   {us(reactor_side)}")
    print(f"database side (batched UPDATE)     {us(db_side)}")
    print(f"together                           {us(both)}")
    endpoint = h.platform.endpoint.stats
    print(f"answered on the keepalive fast path: {endpoint.get('fast_keepalives', 0)} of {args.devices * args.rounds}")
    print(f"at 833 keepalives/s (50,000 devices, 60 s): {833 * 100 * statistics.median(both):.1f} % of a core")
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"profile: {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
