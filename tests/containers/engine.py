"""The container engine as the tests drive it: podman (runc, explicit ulimits, as this machine needs)
and podman-compose on the repo's own compose.yaml; base images built here from Debian's packages, cached
by the digest of what builds them, because no image registry is reachable."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from review_sentiment.constants import PROJECT_DIR

HERE = Path(__file__).resolve().parent
POSTGRES_FILES = ("postgres.Dockerfile", "postgres-entrypoint.sh")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # a proxy's CA, where the build host has one
# What the base image is made of; its tag is this recipe's digest, so a change here builds a new one.
BASE_RECIPE = ("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm")
CONF = "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\n"


def environment(tmp: Path) -> dict[str, str]:
    """podman's settings for this machine (runc; the default ulimits are refused here)."""
    conf = tmp / "containers.conf"
    conf.write_text(CONF)
    return os.environ | {"CONTAINERS_CONF": str(conf)}


def podman(env: dict[str, str], *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """`podman ARGS`; with `check`, a failure raises with the end of what podman said."""
    done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise RuntimeError(f"podman {' '.join(args[:3])} … exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:12]


def base_image(env: dict[str, str], tmp: Path) -> str:
    """Debian bookworm minbase with Python 3.11 and venv, from Debian's packages (debootstrap)."""
    tag = f"localhost/review-sentiment-base:{_digest(' '.join(BASE_RECIPE).encode())}"
    if podman(env, "image", "exists", tag, check=False).returncode:
        root = tmp / "rootfs"
        subprocess.run([*BASE_RECIPE, str(root)], check=True, capture_output=True, timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", tag], stdin=tar.stdout, env=env, check=True, capture_output=True)
        tar.wait()
        shutil.rmtree(root, ignore_errors=True)
    return tag


def build(env: dict[str, str], tag: str, context: Path, base: str, dockerfile: Path | None = None,
          extra: tuple[str, ...] = ()) -> float:
    """`podman build` with BASE_IMAGE (and the host's CA for pip where it has one); seconds taken."""
    args = ["build", "-q", "-t", tag, "--build-arg", f"BASE_IMAGE={base}", *extra]
    if CA_BUNDLE.is_file():
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    if dockerfile is not None:
        args += ["-f", str(dockerfile)]
    started = time.monotonic()
    podman(env, *args, str(context), timeout=1800)
    return time.monotonic() - started


def images(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """The app image from the repo's Dockerfile and the PostgreSQL stand-in, on the Debian base."""
    base = base_image(env, tmp)
    recipe = [base.encode(), *((HERE / name).read_bytes() for name in POSTGRES_FILES)]
    postgres = f"localhost/postgres-standin:{_digest(*recipe)}"
    if podman(env, "image", "exists", postgres, check=False).returncode:
        build(env, postgres, HERE, base, HERE / "postgres.Dockerfile")
    app = "localhost/review-sentiment:test"
    build(env, app, PROJECT_DIR, base)
    return {"APP_IMAGE": app, "POSTGRES_IMAGE": postgres, "BASE_IMAGE": base}


class Images:
    """The images built in a thread of their own, started as the session starts: the cold builds
    (~3 min in CI) then run beside the tests before the container tests, which come last.

    With `-n`, every test process collects the container tests and starts this; `run_id` (the same in
    all of them) lets the first build and the others wait for its result instead of building again."""

    def __init__(self, run_id: str | None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="container-tests-"))
        self.env = environment(self.folder)
        self.shared = Path(tempfile.gettempdir()) / f"container-images-{run_id}.json" if run_id else None
        self.built: Future[dict[str, str]] = Future()
        threading.Thread(target=self._build, daemon=True).start()

    def _build(self) -> None:
        # Niceness is per thread on Linux, and what this thread starts (debootstrap, podman and the builds'
        # RUN steps) inherits it: the tests running meanwhile get the CPU first.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            self.built.set_result(self._build_once() if self.shared else images(self.env, self.folder))
        except BaseException as error:  # handed to the test that waits for the images
            self.built.set_exception(error)

    def _build_once(self) -> dict[str, str]:
        """The images the first test process of this run built (building them if this is the first)."""
        assert self.shared is not None
        with self.shared.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            if self.shared.exists():
                return json.loads(self.shared.read_text())
            built = images(self.env, self.folder)
            self.shared.write_text(json.dumps(built))
            return built

    def wait(self) -> tuple[dict[str, str], dict[str, str]]:
        """podman's environment and the images' names, once they are built."""
        return self.env, self.built.result()

    def remove_folder(self) -> None:
        """Only once the build is over: a session ended early (-x, Ctrl-C) leaves a build still using it."""
        if self.built.done():
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.shared:  # every process of the run removes them; the last to come finds them gone
                self.shared.unlink(missing_ok=True)
                self.shared.with_suffix(".lock").unlink(missing_ok=True)


class Compose:
    """The repo's compose.yaml run from a folder of its own (its .env, its data), as a user runs it."""

    def __init__(self, folder: Path, env: dict[str, str], key: str = "") -> None:
        self.folder, self.env, self.key = folder, env, key
        shutil.copy(PROJECT_DIR / "compose.yaml", folder / "compose.yaml")
        shutil.copytree(PROJECT_DIR / "containers", folder / "containers", dirs_exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        compose = [str(Path(sys.executable).parent / "podman-compose"), "-p", "rs-test"]
        return subprocess.run([*compose, *args], cwd=self.folder, env=self.env, check=check, capture_output=True,
                              text=True, timeout=timeout)

    def container(self, service: str) -> str:
        return f"rs-test_{service}_1"

    def healthy(self, service: str) -> bool:
        """podman 4 without systemd runs no health checks by itself: run the service's now."""
        return podman(self.env, "healthcheck", "run", self.container(service), check=False).returncode == 0
