"""Running a script on several simulated CPU devices (XLA reads the device count at start-up,
so it runs in a fresh process)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_on_devices(code: str, *args: str, devices: int = 4) -> subprocess.CompletedProcess:
    """`python -c code args` from the repository root with `devices` host devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
