"""The web page at / and its assets: served with the right types and headers, packaged,
self-contained (no URL of another host), and not part of the OpenAPI document.
The page itself runs in a browser in tests/e2e/test_web_page.py."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.openapi import openapi_dict
from api.web import STATIC_DIR
from stepanim.services import Services
from stepanim.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(_env_file=None)
    # Nothing here touches Redis or storage: the handles are created lazily.
    with TestClient(create_app(settings, services=Services.from_settings(settings))) as c:
        yield c


def static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_the_page_is_served_at_the_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == (STATIC_DIR / "index.html").read_text()
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "connect-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/app.js">' in response.text
    assert '<link rel="stylesheet" href="/static/style.css">' in response.text


MODULES = {
    "app.js",
    "api.js",
    "capabilities.js",
    "explorer.js",
    "form.js",
    "grid.js",
    "gridform.js",
    "job.js",
    "notice.js",
    "recent.js",
    "util.js",
}


def test_every_asset_is_served_with_its_type(client: TestClient) -> None:
    files = static_files()
    assert {p.name for p in files} >= {"index.html", "style.css", *MODULES}
    for path in files:
        response = client.get(f"/static/{path.relative_to(STATIC_DIR).as_posix()}")
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] == TYPES[path.suffix], path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == path.read_bytes()


def test_a_missing_asset_is_a_404_in_the_one_error_shape(client: TestClient) -> None:
    response = client.get("/static/nothing.js")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_loads_nothing_from_another_host() -> None:
    """The service may run offline: no CDN, no font service, no absolute URL at all."""
    for path in static_files():
        text = path.read_text()
        assert not re.search(r"(?i)\b(?:https?|wss?|ftp):", text), f"{path.name}: an absolute URL"
        # src/href attributes, url(...) and imports point at this origin: "/...", "./...", "#..." or data:
        for ref in re.findall(r'(?:src|href)="([^"]*)"|url\(\s*["\']?([^)"\']*)|from\s+"([^"]*)"', text):
            target = next(r for r in ref if r)
            assert target.startswith(("/", "./", "#", "data:")), f"{path.name}: {target}"
            assert not target.startswith("//"), f"{path.name}: {target}"


def test_the_assets_are_package_data() -> None:
    """A wheel (pip install .) carries every file of api/static."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api"]
    for path in static_files():
        relative = path.relative_to(STATIC_DIR.parent).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_the_page_is_not_an_api_operation() -> None:
    paths = openapi_dict()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/static")]


def test_every_import_names_an_export_of_a_module_here() -> None:
    """The modules import one another by relative path (no build step): each imported file is
    here, exports each name taken from it, and every module is reached from app.js."""
    exports: dict[str, set[str]] = {}
    imports: dict[str, list[tuple[set[str], str]]] = {}
    for path in STATIC_DIR.glob("*.js"):
        text = path.read_text()
        exports[path.name] = set(
            re.findall(r"^export (?:async )?(?:function\*?|class|const|let) ([\w$]+)", text, flags=re.MULTILINE)
        )
        imports[path.name] = [
            ({n.strip() for n in names.split(",") if n.strip()}, target)
            for names, target in re.findall(r'^import \{([^}]*)\} from "\./([^"]+)";', text, flags=re.MULTILINE)
        ]
    assert set(exports) == MODULES
    for module, taken in imports.items():
        for names, target in taken:
            assert target in exports, f"{module} imports {target}, which is not here"
            imported = {n.split(" as ")[0].strip() for n in names}
            assert imported <= exports[target], f"{module}: {imported - exports[target]} not exported by {target}"
    reached, todo = set(), ["app.js"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(target for _, target in imports[module])
    assert reached == MODULES, f"not loaded by the page: {MODULES - reached}"


def test_every_element_the_scripts_look_up_is_in_the_page() -> None:
    """``$("id")`` in the modules names an element of index.html (ids are unique there), and every
    form control has a label: its own <label for>, a wrapping <label>, or an aria-label."""
    html = (STATIC_DIR / "index.html").read_text()
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id used twice in index.html"
    for path in STATIC_DIR.glob("*.js"):
        for wanted in re.findall(r'\$\("([^"]+)"\)', path.read_text()):
            assert wanted in ids, f"{path.name} looks up #{wanted}, which index.html does not have"
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
    for control in re.finditer(r"<(input|select|textarea)\b([^>]*)>", html):
        attributes = control.group(2)
        if 'type="hidden"' in attributes:
            continue
        own_id = re.search(r'\bid="([^"]+)"', attributes)
        wrapped = html.rfind("<label", 0, control.start()) > html.rfind("</label>", 0, control.start())
        assert (own_id and own_id.group(1) in labelled) or wrapped or "aria-label=" in attributes, control.group(0)
