"""agilectl against the lab's agileds, with JSON answers."""
import json
import subprocess

from .state import agiled_url


class Agileds:
    def __init__(self, st):
        self.st = st
        self.agilectl = st["build"]["agilectl"]

    def call(self, host, *args, timeout=None):
        """agilectl --json ARGS on HOST's agiled; raises RuntimeError on failure."""
        argv = [self.agilectl, "-H", agiled_url(self.st["hosts"][host]), "--json", *args]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"agilectl {' '.join(args)}: {p.stderr.strip()}")
        return json.loads(p.stdout) if p.stdout.strip() else {}

    def stat(self, host, vm, timeout=3):
        """`vm stat` of VM on HOST, or None when agiled has no status for it."""
        try:
            return self.call(host, "vm", "stat", vm, timeout=timeout)
        except Exception:
            return None
