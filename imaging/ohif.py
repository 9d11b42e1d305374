"""OHIF v3 as ReadRoom's reading viewer (docs/viewer.md): where it is installed, how it is installed
from npm (pinned by version and integrity), and what is served of it.

Layout of an install (``settings.READROOM_OHIF_DIR``, ignored by git)::

    installed.json         the pin it was installed from (version, integrity): a re-run is a no-op
    index.html             OHIF's page, public path rewritten; served by a view (login, access, headers)
    assets/<version>/...   the bundles, wasm, fonts and icons (+ ``.gz`` twins), served by a view with
                           immutable caching at ``/ohif/<version>/...``

OHIF's build expects the origin root (``window.PUBLIC_URL="/"``, webpack's public path ``"/"``). Rather
than scatter its ~100 files over ReadRoom's URL space, the install rewrites that public path once to
``/ohif/<version>/`` (a handful of literal strings, checked: the install fails if one is missing). The
version in the path makes every asset URL immutable, so browsers keep them for a year and an upgrade
can never mix old and new chunks."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
# npm's dist.integrity for @ohif/app@3.13.2: the tarball is checked against it before anything is used.
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="

URL_PREFIX = "/ohif/"  # the router basename: /ohif/viewer?StudyInstanceUIDs=…
ASSET_PREFIX = f"{URL_PREFIX}{VERSION}/"  # webpack's public path after the install

# Not served: onnxruntime (136 MB, only for the AI segmentation tools ReadRoom does not enable), the
# whole-slide microscopy viewer (no microscopy mode is linked), OHIF's own config and deploy files
# (ReadRoom generates app-config.js), the PWA service worker and OIDC helpers (the session cookie
# authenticates), the example customizations (URL customization is off) and source maps.
EXCLUDED_TOP = {
    "ort",
    "dicom-microscopy-viewer",
    "customizations",
    "app-config.js",
    "_headers",
    "_redirects",
    "serve.json",
    "sw.js",
    "init-service-worker.js",
    "google.js",
    "oidc-client.min.js",
    "silent-refresh.html",
    "manifest.json",
}
EXCLUDED_SUFFIXES = (".map", ".LICENSE.txt")
COMPRESSED_SUFFIXES = (".js", ".css", ".wasm", ".json", ".svg", ".html", ".txt", ".xml")


class OhifInstallError(Exception):
    pass


@dataclass(frozen=True)
class OhifInstall:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "installed.json"

    @property
    def index_html(self) -> Path:
        return self.root / "index.html"

    @property
    def assets(self) -> Path:
        return self.root / "assets" / VERSION

    def is_current(self) -> bool:
        try:
            pin = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return False
        pinned = pin.get("version") == VERSION and pin.get("integrity") == INTEGRITY
        return pinned and self.index_html.exists()


def ohif_install_dir() -> OhifInstall:
    return OhifInstall(Path(settings.READROOM_OHIF_DIR))


def ohif_available() -> bool:
    """True when the pinned OHIF is installed and can be served (asked for every worklist row: one
    stat, the marker is parsed again only when it changes)."""
    install = ohif_install_dir()
    try:
        mtime = install.marker.stat().st_mtime_ns
    except OSError:
        return False
    return _is_current(install, mtime)


@lru_cache(maxsize=4)
def _is_current(install: OhifInstall, mtime: int) -> bool:
    return install.is_current()


# --- install ------------------------------------------------------------------------------------


def ohif_install(
    *, root: Path | None = None, npm: str = "npm", tarball: Path | None = None, log=print
) -> bool:
    """Install the pinned OHIF into ``root``; False when it already was (nothing done).

    ``npm pack`` fetches the tarball (from the registry npm is configured for, or its cache); its
    sha512 must equal the pin. Only what is served is extracted; the public path is rewritten and
    the text assets are gzipped once, here, so the server never compresses per request."""
    install = OhifInstall(Path(root)) if root else ohif_install_dir()
    if install.is_current():
        return False
    install.root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ohif-", dir=install.root.parent) as tmp:
        work = Path(tmp)
        if tarball is None:
            tarball = _npm_pack(npm, work)
        _integrity_check(tarball)
        staged = OhifInstall(work / "staged")
        _extract(tarball, staged)
        _public_path_rewrite(staged)
        _gzip_twins(staged.assets)
        staged.marker.write_text(json.dumps({"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY}))
        # Swap in whole: a server reading the old install never sees a half-written one.
        old = work / "old"
        if install.root.exists():
            install.root.rename(old)
        staged.root.rename(install.root)
    log(f"OHIF {VERSION} installed in {install.root}")
    return True


def _npm_pack(npm: str, work: Path) -> Path:
    spec = f"{PACKAGE}@{VERSION}"
    try:
        done = subprocess.run(  # noqa: S603 — a fixed argument list, no shell; npm is the operator's
            [npm, "pack", spec, "--json", "--silent", "--pack-destination", str(work)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except FileNotFoundError as exc:
        raise OhifInstallError(f"npm not found ({npm}): apt-get install npm, then make ohif") from exc
    if done.returncode != 0:
        raise OhifInstallError(f"npm pack {spec} failed: {done.stderr.strip()[-500:]}")
    try:
        filename = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError) as exc:
        raise OhifInstallError(f"npm pack {spec}: unexpected output {done.stdout[:200]!r}") from exc
    # npm names scoped tarballs "ohif-app-3.13.2.tgz"; never trust a path from its output
    tarball = work / Path(filename).name
    if not tarball.exists():
        raise OhifInstallError(f"npm pack {spec}: {tarball.name} was not written")
    return tarball


def _integrity_check(tarball: Path) -> None:
    algorithm, _, expected = INTEGRITY.partition("-")
    digest = hashlib.new(algorithm)
    with tarball.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise OhifInstallError(
            f"{tarball.name}: integrity {algorithm}-{actual} does not match the pin {INTEGRITY}; "
            "nothing was installed"
        )


def _served(relative: str) -> bool:
    top = relative.split("/", 1)[0]
    return top not in EXCLUDED_TOP and not relative.endswith(EXCLUDED_SUFFIXES)


def _extract(tarball: Path, staged: OhifInstall) -> None:
    staged.assets.mkdir(parents=True)
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.isfile() or not member.name.startswith("package/dist/"):
                continue
            relative = member.name.removeprefix("package/dist/")
            parts = Path(relative).parts
            if not parts or ".." in parts or Path(relative).is_absolute():
                raise OhifInstallError(f"unsafe path in the tarball: {member.name}")
            if relative == "index.html":
                destination = staged.index_html
            elif _served(relative):
                destination = staged.assets / relative
            else:
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # a regular file
            with source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)


# Literal strings of the 3.13.2 build that name the public path; each must be found, or the build
# changed and the rewrite must be looked at again (the install fails rather than serve a broken app).
_WEBPACK_PUBLIC_PATH = '__webpack_require__.p = "/"'


def _public_path_rewrite(staged: OhifInstall) -> None:
    html = staged.index_html.read_text()
    if html.count('window.PUBLIC_URL="/"') != 2:
        raise OhifInstallError("index.html: window.PUBLIC_URL not found where expected")
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{ASSET_PREFIX}"')
    html = re.sub(r'<link rel="manifest"[^>]*>', "", html)
    html = re.sub(r'<script[^>]*src="/init-service-worker\.js"[^>]*></script>', "", html)
    html, n = re.subn(r'(href|src|content)="/(?!/)', rf'\1="{ASSET_PREFIX}', html)
    # app-config.js is ReadRoom's, generated per request (imaging.views.ohif_app_config)
    html = html.replace(f'src="{ASSET_PREFIX}app-config.js"', f'src="{URL_PREFIX}app-config.js"')
    if 'src="/' in html.replace(ASSET_PREFIX, "").replace(f"{URL_PREFIX}app-config.js", "") or n < 3:
        raise OhifInstallError("index.html: could not rewrite every asset path")
    staged.index_html.write_text(html)
    rewritten = 0
    for script in staged.assets.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        if _WEBPACK_PUBLIC_PATH in text:
            script.write_text(
                text.replace(_WEBPACK_PUBLIC_PATH, f'__webpack_require__.p = "{ASSET_PREFIX}"'),
                encoding="utf-8",
            )
            rewritten += 1
    if not any(p.name.startswith("app.bundle.") for p in staged.assets.glob("*.js")) or rewritten < 2:
        raise OhifInstallError("the bundles' public path was not found: is this the pinned build?")
    for sheet in staged.assets.glob("*.css"):
        text = sheet.read_text(encoding="utf-8")
        sheet.write_text(re.sub(r"url\(/(?!/)", f"url({ASSET_PREFIX}", text), encoding="utf-8")


def _gzip_twins(assets: Path) -> None:
    for path in assets.rglob("*"):
        if path.is_file() and path.suffix in COMPRESSED_SUFFIXES and path.stat().st_size > 1024:
            with path.open("rb") as source, gzip.open(path.with_name(path.name + ".gz"), "wb", 6) as out:
                shutil.copyfileobj(source, out)


# --- serving ------------------------------------------------------------------------------------

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",  # streaming compilation needs exactly this type
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".xml": "application/xml",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix, "application/octet-stream")


def asset_path(relative: str) -> Path | None:
    """The installed file for an asset URL, or None; never a path outside the install."""
    parts = Path(relative).parts
    if not parts or any(p in ("..", ".") or p.startswith(".") for p in parts) or relative.endswith(".gz"):
        return None
    root = ohif_install_dir().assets
    path = root.joinpath(*parts)
    return path if path.is_file() and root in path.parents else None


def app_config(*, dicomweb_root: str = "/dicomweb") -> dict:
    """OHIF's ``window.config`` (docs/viewer.md §config): one data source, ReadRoom's DICOMweb on
    this origin; no study list, no local files, no ``?url=``/``configUrl``/``?customization=``
    sources, no investigational-use dialog (accepted by the facility at onboarding)."""
    return {
        "name": "readroom",
        "routerBasename": URL_PREFIX.rstrip("/"),
        "extensions": [],
        "modes": [],
        # No onboarding tour over the first image of every read.
        "customizationService": {"ohif.tours": {"$set": []}},
        "showStudyList": False,
        # A SEG (an AI's segmentation) in a viewport is overlaid at once, without OHIF's "load the
        # segmentation?" prompt (OHIF 3.13.2 promptHydrationDialog; SR hydration is governed by
        # measurementTrackingMode, untouched): the reader opened it to see it (docs/ai.md).
        "disableConfirmationPrompts": True,
        "investigationalUseDialog": {"option": "never"},
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumberOfWebWorkers": 3,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "showErrorDetails": "production",
        "defaultDataSourceName": "readroom",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "readroom",
                "configuration": {
                    "friendlyName": "ReadRoom",
                    "name": "readroom",
                    "wadoUriRoot": dicomweb_root,
                    "qidoRoot": dicomweb_root,
                    "wadoRoot": dicomweb_root,
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    # An <img> on the instance's …/thumbnail (same origin: the session cookie
                    # authenticates it): a small server-rendered image, not a full frame fetched
                    # and decoded in the browser per series (docs/viewer.md).
                    "thumbnailRendering": "thumbnailDirect",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "supportsReject": False,
                    "staticWado": False,
                    "singlepart": "pdf,video",
                    # Frames as stored (Accept: …; transfer-syntax=*): OHIF decodes JPEG Lossless,
                    # JPEG-LS and JPEG 2000 itself, and the server sends bytes without transcoding.
                    "requestTransferSyntaxUID": "*",
                    "omitQuotationForMultipartRequest": True,
                    # Metadata has no BulkDataURI yet; with it enabled OHIF follows one when present.
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "dicomUploadEnabled": False,
                },
            }
        ],
    }


def app_config_js() -> str:
    return (
        "/* Generated by ReadRoom (imaging/ohif.py): do not edit. */\n"
        f"window.config = {json.dumps(app_config(), indent=2)};\n"
        # A rejected request (e.g. the session expired) is logged; OHIF shows its own error.
        "window.config.httpErrorHandler = (error) => { console.warn('DICOMweb', error && error.status); };\n"
    )
