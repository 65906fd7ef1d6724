"""CPU per model call of the litellm judge alone, in this process, against the stand-in provider.

The stand-in (`tests/fake_provider.py`) runs as its own process so that its CPU is not counted. This process
builds a ``LiteLLMJudge``, warms it up as the server does, and judges ``--calls`` distinct prompts
(``--concurrency`` in flight) ``--rounds`` times; each round prints the process's CPU per call (all threads:
utime+stime from /proc) and that of the judge's event-loop thread. ``--profile FILE`` also runs cProfile on the
judge's event-loop thread during the last round and writes the stats there (read them with
``python -m pstats FILE``); profiling inflates the CPU figures of that round.

    .venv/bin/python -m bench.judge_cpu [--calls 1000] [--rounds 3] [--delay 0.3] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # also runnable as `python bench/judge_cpu.py`
    sys.path.insert(0, str(ROOT))

from bench.semantic import CRITERION, load_average, proc_cpu_ms, text  # noqa: E402
from bench.wire import GcTimes  # noqa: E402
from semantic_ops.judges.base import JudgeRequest  # noqa: E402
from semantic_ops.judges.litellm import LiteLLMJudge  # noqa: E402

MODEL = "openai/stand-in"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu_ms(tid: int) -> tuple[float, float]:
    """(user, system) CPU ms of one thread of this process."""
    stat = Path(f"/proc/{os.getpid()}/task/{tid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) * 1000.0 / CLK_TCK, int(fields[12]) * 1000.0 / CLK_TCK


def start_provider(delay: float, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_provider", "--port", "0", "--delay", str(delay), "--nodelay", "--backlog", "1024"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"stand-in provider at (http://\S+)", log.read_text(errors="replace"))
        if m:
            return proc, m.group(1)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stand-in provider did not start:\n" + log.read_text(errors="replace"))


def requests(n: int, offset: int) -> list[JudgeRequest]:
    """Prompts shaped like MEANS's (a system message and a user message with Criterion/Text lines)."""
    system = "You judge whether a text satisfies a criterion. Answer with exactly one word: true or false."
    return [
        JudgeRequest(
            MODEL,
            ({"role": "system", "content": system}, {"role": "user", "content": f"Criterion: {CRITERION}\nText: {text(offset + i)}"}),
            temperature=0.0,
            max_tokens=5,
        )
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds the stand-in takes per answer (0.3)")
    parser.add_argument("--profile", type=Path, help="cProfile the judge's event-loop thread in the last round")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="meansql-judge-cpu-"))
    provider, url = start_provider(args.delay, workdir / "provider.log")
    judge = LiteLLMJudge(api_base=url, api_key="sk-bench", max_concurrency=args.concurrency)
    try:
        judge.warm_up(MODEL)
        judge.judge(requests(args.concurrency, 10**6), threading.Event())  # connections and lazy imports
        loop_tid = judge._thread.native_id
        assert loop_tid is not None
        print(f"{args.calls} calls, {args.concurrency} in flight, stand-in answering after {args.delay} s; load average {load_average()}")
        gc_times = GcTimes()
        for r in range(args.rounds):
            gc_times.reset()
            profiler = cProfile.Profile() if args.profile and r == args.rounds - 1 else None
            if profiler is not None:
                judge._loop.call_soon_threadsafe(profiler.enable)
            batch = requests(args.calls, r * args.calls)
            cpu0, loop0, t0 = proc_cpu_ms(os.getpid()) or 0.0, thread_cpu_ms(loop_tid), time.perf_counter()
            outcomes = judge.judge(batch, threading.Event())
            wall = time.perf_counter() - t0
            loop1 = thread_cpu_ms(loop_tid)
            cpu = (proc_cpu_ms(os.getpid()) or 0.0) - cpu0
            loop_user, loop_sys = loop1[0] - loop0[0], loop1[1] - loop0[1]
            if profiler is not None:
                judge._loop.call_soon_threadsafe(profiler.disable)
                time.sleep(0.1)
                profiler.dump_stats(args.profile)
            errors = sum(o.error is not None for o in outcomes)
            print(
                f"round {r + 1}{' (profiled)' if profiler else ''}: process CPU {cpu / args.calls:.3f} ms/call, "
                f"judge loop thread {(loop_user + loop_sys) / args.calls:.3f} ms/call "
                f"({loop_sys / args.calls:.3f} system), wall {wall:.2f} s, errors {errors}, "
                f"load {load_average()}; {gc_times.line(args.calls)}",
                flush=True,
            )
    finally:
        judge.close()
        provider.kill()
        provider.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
