"""Refresh the vendored Plotly partial bundle (``make vendor-plotly``).

Fetches ``plotly.js-cartesian-dist-min`` at the plotly.js version the installed python ``plotly`` bundles, with
npm from the registry; checks the tarball against the registry's sha512 integrity; copies
``plotly-cartesian.min.js`` (unmodified) and its licence here and writes ``plotly-cartesian.json`` (package,
version, integrity, sha256 of the file). Exit 2 with one line on any failure, leaving the vendored files as they were.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "plotly.js-cartesian-dist-min"
BUNDLE = "plotly-cartesian.min.js"
HERE = Path(__file__).resolve().parent


def fail(message: str) -> None:
    """Print one line and exit 2."""
    print(f"vendor-plotly: {message}", file=sys.stderr)
    raise SystemExit(2)


def npm(*args: str, cwd: Path | None = None) -> str:
    """Run npm, return its stdout; fail with its last error line."""
    if shutil.which("npm") is None:
        fail("npm is not installed: install Node.js/npm, then run `make vendor-plotly` again")
    done = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        fail(f"npm {' '.join(args)} failed: {last}")
    return done.stdout


def main() -> None:
    """Fetch, check and copy the bundle matching the installed plotly's plotly.js."""
    from plotly.offline import get_plotlyjs_version

    version = get_plotlyjs_version()
    spec = f"{PACKAGE}@{version}"
    integrity = json.loads(npm("view", spec, "dist.integrity", "--json") or "null")
    if not isinstance(integrity, str) or not integrity.startswith("sha512-"):
        fail(f"the registry has no sha512 integrity for {spec} (is there such a version?)")
    with tempfile.TemporaryDirectory() as tmp:
        packed = json.loads(npm("pack", spec, "--json", "--pack-destination", tmp, cwd=Path(tmp)))
        tarball = Path(tmp) / packed[0]["filename"]
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != integrity:
            fail(f"{tarball.name}: sha512 {digest} is not the registry's {integrity}; nothing was changed")
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, members=[tar.getmember(f"package/{BUNDLE}"), tar.getmember("package/LICENSE")],
                           filter="data")
        js = (Path(tmp) / "package" / BUNDLE).read_bytes()
        if f"v{version}".encode() not in js[:300]:
            fail(f"{BUNDLE} from {spec} does not say v{version} in its header")
        shutil.copyfile(Path(tmp) / "package" / "LICENSE", HERE / "plotly-cartesian.LICENSE")
        (HERE / BUNDLE).write_bytes(js)
    manifest = {"package": PACKAGE, "version": version, "integrity": integrity, "file": BUNDLE,
                "sha256": hashlib.sha256(js).hexdigest()}
    (HERE / "plotly-cartesian.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"vendored {spec} ({len(js):,} bytes, {integrity})")


if __name__ == "__main__":
    main()
