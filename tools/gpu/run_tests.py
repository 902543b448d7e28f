#!/usr/bin/env python3
"""Runs a Meson build's test list (meson-info/intro-tests.json) without Meson:
for a build directory made on one machine and carried to another (the GPU
machine of tools/gpu/device_check.sh has another Meson, or none). Each test
gets its env, workdir (else the build dir) and timeout (capped by --cap);
an interpreter path that does not exist here is looked up on PATH. Prints
one line per test (OK / SKIP / FAIL rc / TIMEOUT, seconds) and the failures'
output; exit 1 if any test failed.

  run_tests.py BUILD_DIR [--jobs N] [--cap SECONDS] [--only a,b] [--skip a,b] [--log DIR]
"""
import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--cap", type=float, default=600)
    ap.add_argument("--only", default="")
    ap.add_argument("--skip", default="")
    ap.add_argument("--log", default="")
    a = ap.parse_args()
    tests = json.load(open(os.path.join(a.build, "meson-info", "intro-tests.json")))
    only = set(filter(None, a.only.split(",")))
    skip = set(filter(None, a.skip.split(",")))
    tests = [t for t in tests if (not only or t["name"] in only) and t["name"] not in skip]
    if a.log:
        os.makedirs(a.log, exist_ok=True)

    def run(t):
        cmd = list(t["cmd"])
        if not os.path.exists(cmd[0]):
            found = shutil.which(os.path.basename(cmd[0]))
            if found:
                cmd[0] = found
        env = dict(os.environ)
        env.update(t.get("env") or {})
        env.setdefault("MESON_TEST_ITERATION", "1")
        tmo = min(float(t.get("timeout") or 30), a.cap)
        t0 = time.time()
        try:
            p = subprocess.run(cmd, cwd=t.get("workdir") or a.build, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=tmo)
            rc, out = p.returncode, p.stdout
        except subprocess.TimeoutExpired as e:
            rc, out = "TIMEOUT", e.stdout or b""
        except OSError as e:
            rc, out = "NOEXEC", str(e).encode()
        dt = time.time() - t0
        if a.log:
            with open(os.path.join(a.log, t["name"] + ".log"), "wb") as f:
                f.write(out)
        return t["name"], rc, dt, out

    t0 = time.time()
    bad = []
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        for name, rc, dt, out in ex.map(run, tests):
            st = "OK" if rc == 0 else "SKIP" if rc == 77 else f"FAIL {rc}"
            print(f"{name:32s} {st:12s} {dt:7.1f}s", flush=True)
            if st.startswith("FAIL"):
                bad.append((name, out))
    print(f"{len(tests)} tests, {len(bad)} failed, {time.time() - t0:.0f}s wall")
    for name, out in bad:
        print(f"===== {name} (last 40 lines)")
        print("\n".join(out.decode(errors="replace").splitlines()[-40:]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
