#!/usr/bin/env python3
"""Profile one server under wrk load with py-spy, and summarise where time goes.

    /work/bench-venv/bin/python bench/profile.py --server app_server --scenario plaintext

Starts the server exactly as bench/run.py does (pinned to core 0, one process),
checks its answer, warms up, then runs wrk (core 1, -t1 -c64) while
``py-spy record --format raw`` samples the server (py-spy runs on core 1 too).
Writes the collapsed stacks to bench/out/profile-<server>-<scenario>.txt and
prints a Markdown summary: top functions by self time and by total time.
The server is always stopped by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py)

_FRAME_LINE = re.compile(r":\d+\)$")


def _frame_key(frame: str) -> str:
    """'handler (path/to/mod.py:12)' -> 'handler (mod.py)'; aggregates over lines."""
    frame = _FRAME_LINE.sub(")", frame.strip())
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{func} ({short})"


def summarise(raw_path: Path, top: int) -> str:
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count_s = line.rpartition(" ")
        try:
            count = int(count_s)
        except ValueError:
            continue
        frames = [_frame_key(f) for f in stack.split(";")
                  if f and not f.startswith(("process ", "thread "))]
        # py-spy puts "process ..."/"thread ..." pseudo-frames first when asked;
        # the leaf is last.
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    if samples == 0:
        raise bench.BenchError(f"no samples in {raw_path}")
    out = [f"{samples} samples.", "", "Top by self time:", "",
           "| self % | function |", "|---:|---|"]
    for name, n in self_counts.most_common(top):
        out.append(f"| {100 * n / samples:.1f} | `{name}` |")
    out += ["", "Top by total (inclusive) time:", "", "| total % | function |", "|---:|---|"]
    for name, n in total_counts.most_common(top):
        out.append(f"| {100 * n / samples:.1f} | `{name}` |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="app_server", choices=list(bench.SERVERS))
    parser.add_argument("--scenario", default="plaintext", choices=list(bench.SCENARIOS))
    parser.add_argument("--duration", type=int, default=10, help="seconds of profiled load")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60:
        parser.error("duration must be 1-60 s")

    py_spy = bench._bin("py-spy")
    if not Path(py_spy).exists() and shutil.which("py-spy") is None:
        sys.exit("error: py-spy not found (pip install py-spy into the bench venv)")
    bench._check_tools()

    scenario = bench.SCENARIOS[args.scenario]
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw_path = bench.OUT_DIR / f"profile-{args.server}-{args.scenario}.txt"
    log = bench.OUT_DIR / "logs" / f"profile-{args.server}.log"
    server = bench.ServerProcess(args.server, bench.free_port(), log)
    spy: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        bench.verify(server.port, scenario)
        bench.run_wrk(server.port, scenario, 1, 64)  # warm-up
        spy_cmd = [
            "taskset", "-c", bench.WRK_CPU, py_spy, "record", "--pid", str(server.pid),
            "--subprocesses", "--rate", str(args.rate), "--duration", str(args.duration + 1),
            "--format", "raw", "--output", str(raw_path),
        ]
        # --native needs py-spy to pause the process for each sample; without it,
        # sample without pausing so the server is slowed as little as possible.
        spy_cmd.append("--native" if args.native else "--nonblocking")
        spy = subprocess.Popen(spy_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        result: dict = {}
        error: list[BaseException] = []

        def load() -> None:
            try:
                result.update(bench.run_wrk(server.port, scenario, args.duration, 64))
            except BaseException as exc:  # reported below
                error.append(exc)

        worker = threading.Thread(target=load)
        worker.start()
        worker.join()
        out, _ = spy.communicate(timeout=args.duration + 30)
        if spy.returncode != 0:
            raise bench.BenchError(f"py-spy exited {spy.returncode}: {out.decode()[-400:]}")
        spy = None
        if error:
            raise error[0]
        print(f"## Profile: {args.server} / {args.scenario} "
              f"({args.duration} s, py-spy {args.rate} Hz{', native' if args.native else ''})")
        print()
        print(f"Under profiling: {result['rps']:.0f} req/s, p99 {result['p99_ms']:.2f} ms "
              "(py-spy shares core 1 with wrk and slows the server a little).")
        print()
        print(summarise(raw_path, args.top))
        print()
        print(f"Collapsed stacks: {raw_path.relative_to(bench.REPO_ROOT)}")
        return 0
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if spy is not None and spy.poll() is None:
            spy.terminate()
            try:
                spy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=5)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
