"""Stand-in base images for the compose check on a machine no registry reaches (development only).

``scripts/compose_check.py`` pulls the images the Dockerfiles and the compose file name; only when
a pull fails does it build a STAND-IN under the same name here, labelled
``ls-active-learning.stand-in=true``:

- Python (``python:<3.11.x>-slim-bookworm``): ``debootstrap --variant=minbase bookworm`` with
  Debian's own Python 3.11 (the official image builds CPython into /usr/local), python/python3/pip
  on PATH as there, the machine's CA bundle, and a pip.conf that points at the machine's local
  wheel indexes, served on loopback while the check runs (``WheelIndexes``), so pip inside
  ``docker build --network host`` works behind this machine's proxy;
- Redis (``redis:<7.x>-alpine``): Debian bookworm's redis-server 7.0 on the Python stand-in, run as
  the redis user in /data, with protected mode off as the official image runs it;
- Label Studio (``heartexlabs/label-studio:<version>``): pip's label-studio of that version in a
  venv on the Python stand-in, run as uid 1001 with its data in /label-studio/data (the official
  image adds nginx + uwsgi).

Needs debootstrap (``apt-get install debootstrap``) and root. A user's machine never needs this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

STANDIN_LABEL = "ls-active-learning.stand-in"
PIP_CONF = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180\ntrusted-host = 127.0.0.1\n"


class StandInFailed(RuntimeError):
    pass


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pip_config(key: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True
    )
    return result.stdout.split() if result.returncode == 0 else []


def local_wheel_folders() -> tuple[list[Path], list[Path]]:
    """The machine's local simple indexes and find-links folders (file:// in its pip config)."""
    indexes = [
        Path(url[len("file://") :])
        for url in _pip_config("global.extra-index-url")
        if url.startswith("file://")
    ]
    links = [Path(url.removeprefix("file://")) for url in _pip_config("global.find-links")]
    return [d for d in indexes if d.is_dir()], [d for d in links if d.is_dir()]


def pip_conf_text(index_urls: list[str], find_links: list[str]) -> str:
    """The stand-in's /etc/pip.conf: the machine's CA bundle and its served wheel indexes."""
    text = PIP_CONF
    if index_urls:
        text += f"extra-index-url = {' '.join(index_urls)}\n"
    if find_links:
        text += f"find-links = {' '.join(find_links)}\n"
    return text


class WheelIndexes:
    """The machine's local wheel indexes, served read-only on loopback from ``first_port`` on while
    the check runs; ``pip_conf`` is the matching pip.conf (written to ``work / "pip.conf"``)."""

    def __init__(self, work: Path, first_port: int) -> None:
        self.work, self.first_port = work, first_port
        self.processes: list[subprocess.Popen] = []
        self.pip_conf = work / "pip.conf"

    def _serve(self, folder: Path, port: int) -> None:
        log = open(self.work / f"wheels-{port}.log", "wb")
        self.processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(folder),
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def start(self) -> WheelIndexes:
        if self.processes:
            return self
        indexes, links = local_wheel_folders()
        port, index_urls, link_urls = self.first_port, [], []
        for folder in indexes:
            # a simple index links its files relatively (../../files/...): serve its parent folder
            self._serve(folder.parent, port)
            index_urls.append(f"http://127.0.0.1:{port}/{folder.name}/")
            port += 1
        for folder in links:
            self._serve(folder, port)
            link_urls.append(f"http://127.0.0.1:{port}/")
            port += 1
        self.pip_conf.write_text(pip_conf_text(index_urls, link_urls))
        if self.processes:
            time.sleep(1)
            if any(p.poll() is not None for p in self.processes):
                raise StandInFailed(
                    f"a local wheel index on 127.0.0.1:{self.first_port}..{port - 1} "
                    "stopped (port busy? another compose check?)"
                )
            _log(f"local wheel indexes served on 127.0.0.1:{self.first_port}..{port - 1}")
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)
        self.processes = []


def debian_mirror() -> str:
    """$DEBIAN_MIRROR, else the first (non-security) deb URI of the machine's apt sources."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]
    for path in sources:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("URIs:", "deb") and "security" not in words[1]:
                return words[1]
    return "http://deb.debian.org/debian"


def _remove_rootfs(rootfs: Path) -> None:
    # debootstrap mounts proc/sys inside the rootfs; an interrupted run can leave them mounted
    for mount in ("proc", "sys", "dev/pts"):
        if subprocess.run(["mountpoint", "-q", str(rootfs / mount)]).returncode == 0:
            subprocess.run(["umount", "-l", str(rootfs / mount)], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=False)


def build_python(image: str, work: Path, wheels: WheelIndexes) -> None:
    if not shutil.which("debootstrap"):
        raise StandInFailed("debootstrap is needed for stand-in images (apt-get install debootstrap)")
    rootfs = work / "rootfs-python"
    _remove_rootfs(rootfs)
    packages = "python3.11,python3.11-venv,python3-venv,python3-distutils,python3-pip,ca-certificates"
    with open(work / "debootstrap.log", "wb") as log:
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={packages}",
                "bookworm",
                str(rootfs),
                debian_mirror(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise StandInFailed(f"debootstrap failed (log: {work / 'debootstrap.log'})")
    bin_dir = rootfs / "usr" / "local" / "bin"
    for name in ("python", "python3"):
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to("/usr/bin/python3.11")
    (bin_dir / "pip").write_text('#!/bin/sh\nexec /usr/bin/python3.11 -m pip "$@"\n')
    (bin_dir / "pip").chmod(0o755)
    # the official image's pip installs into its own Python; Debian marks its Python as externally managed
    (rootfs / "usr" / "lib" / "python3.11" / "EXTERNALLY-MANAGED").unlink(missing_ok=True)
    shutil.copy(
        "/etc/ssl/certs/ca-certificates.crt", rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt"
    )
    wheels.start()
    shutil.copy(wheels.pip_conf, rootfs / "etc" / "pip.conf")
    for cache in (rootfs / "var" / "cache" / "apt" / "archives", rootfs / "var" / "lib" / "apt" / "lists"):
        for path in cache.glob("*"):
            if path.is_file():
                path.unlink()
    tar = subprocess.Popen(["tar", "--one-file-system", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [
            "docker",
            "import",
            "-c",
            f"LABEL {STANDIN_LABEL}=true",
            "-c",
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8",
            "-c",
            'CMD ["python3"]',
            "-",
            image,
        ],
        stdin=tar.stdout,
        stdout=subprocess.DEVNULL,
    )
    tar.wait()
    _remove_rootfs(rootfs)
    if imported.returncode != 0 or tar.returncode != 0:
        raise StandInFailed(f"docker import of {image} failed")


def redis_dockerfile(python_image: str) -> str:
    # Debian's redis-server keeps protected mode on and resets every non-loopback client; the
    # official image's runs with it off, so the entry point adds --protected-mode no
    entrypoint = (
        '#!/bin/sh\\nif [ "$1" = redis-server ]; then shift; exec redis-server "$@" '
        '--protected-mode no; fi\\nexec "$@"\\n'
    )
    return f"""FROM {python_image}
LABEL {STANDIN_LABEL}=true
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \\
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data \\
 && printf '{entrypoint}' >/usr/local/bin/docker-entrypoint.sh \\
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
"""


def label_studio_dockerfile(python_image: str, version: str) -> str:
    return f"""FROM {python_image}
LABEL {STANDIN_LABEL}=true
RUN python -m venv /label-studio/.venv \\
 && /label-studio/.venv/bin/pip install --no-cache-dir label-studio=={version} \\
 && useradd --uid 1001 --gid 0 --home-dir /label-studio --no-create-home labelstudio \\
 && mkdir -p /label-studio/data /label-studio/files && chown -R 1001:0 /label-studio/data /label-studio/files
ENV PATH=/label-studio/.venv/bin:$PATH LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data
WORKDIR /label-studio
USER 1001
EXPOSE 8080
CMD ["label-studio", "start", "--no-browser", "--internal-host", "0.0.0.0", "--port", "8080"]
"""


def _build_from_text(image: str, dockerfile: str, work: Path) -> None:
    log = work / "standin-build.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            ["docker", "build", "--network", "host", "-q", "-t", image, "-"],
            input=dockerfile.encode(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise StandInFailed(f"stand-in {image} did not build (log: {log})")


def build_standin(
    image: str, python_image: str, work: Path, wheels: WheelIndexes, ensure_python: Callable[[], None]
) -> str:
    """Build a stand-in for ``image`` (one of the three bases); returns what it is made of.
    ``ensure_python`` makes ``python_image`` present (pulled or a stand-in) for the other two."""
    if image == python_image:
        build_python(image, work, wheels)
        return (
            "debootstrap --variant=minbase bookworm with Debian's python3.11, the machine's CA "
            "bundle and a pip.conf for its local wheels"
        )
    ensure_python()
    if image.startswith("redis:"):
        _build_from_text(image, redis_dockerfile(python_image), work)
        return "Debian bookworm's redis-server 7.0 on the Python stand-in, protected mode off"
    if image.startswith("heartexlabs/label-studio:"):
        version = image.rsplit(":", 1)[1]
        _build_from_text(image, label_studio_dockerfile(python_image, version), work)
        return f"pip label-studio=={version} in a venv on the Python stand-in, Django's server"
    raise StandInFailed(f"no stand-in is known for {image}")
