"""The page's catalogues: every reason code the code base can set has words in both
languages, both catalogues have the same keys, and every key the page uses exists."""

from __future__ import annotations

import ast
import json
import re

from edge_agent.health import State
from tests.conftest import REPO

PACKAGE = REPO / "edge_agent"
STATIC = PACKAGE / "web" / "static"
CATALOGUES = {
    lang: json.loads((STATIC / "i18n" / f"{lang}.json").read_text()) for lang in ("vi", "en")
}
# Kinds registered with Role.SOURCE (app.py): the registry says all_{kind}s_down for them.
SOURCE_KINDS = ("sensor", "camera")
# Codes other parts are adding in parallel (named in their issues); their words are ready.
ANNOUNCED = {
    "broker_unreachable",
    "commands_refused",
    "publish_refused",
    "client_id_in_use",
    "disk_full",
    "no_disk_reserve",
    "writer_stalled",
    "database_corrupt",
    "no_answer",
    "read_failed",
    "driver_error",
    "values_rejected",
    "no_usable_values",
    "camera_offline",
    "end_of_file",
    "capture_crashed",
    "model_unavailable",
    "inference_stuck",
    "stalled",
    "wedged",
    "starting",
    "all_sensors_down",
    "all_cameras_down",
}
PLACEHOLDER = re.compile(r"\{(\w+)(?::(\w+))?\}")
TYPES = {None, "int", "num", "dur", "elapsed", "ago", "time", "bytes"}


def _constants(tree: ast.Module) -> dict[str, str]:
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _passes_code(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function with a `code` parameter that it hands to `reason(code, ...)`."""
    return "code" in [a.arg for a in function.args.args] and any(
        isinstance(node, ast.Call)
        and _callee(node) == "reason"
        and node.args
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "code"
        for node in ast.walk(function)
    )


def _has_code_param(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _passes_code(node)
        for node in ast.walk(tree)
    )


def codes_in_code_base() -> tuple[set[str], list[str]]:
    """Every reason code set anywhere in edge_agent/, and the calls it could not resolve.

    Found: `reason("code", ...)`; `reason(NAME, ...)` with a module constant; the registry's
    `all_{kind}s_down` and state-named fallbacks; and a code handed through a parameter
    named `code` (`def _failed(self, why, code="read_failed")`, `self._failed(why, "x")`)."""
    codes: set[str] = set()
    unresolved: list[str] = []
    trees = {path: ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}
    code_params: dict[str, int] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _passes_code(node):
                names = [a.arg for a in node.args.args]
                offset = 1 if names and names[0] in ("self", "cls") else 0
                code_params[node.name] = names.index("code") - offset
                defaults = node.args.defaults
                index = names.index("code") - (len(names) - len(defaults))
                if 0 <= index < len(defaults) and isinstance(defaults[index], ast.Constant):
                    codes.add(str(defaults[index].value))
    for path, tree in trees.items():
        constants = _constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _callee(node)
            if name == "reason" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    codes.add(first.value)
                elif isinstance(first, ast.Name) and first.id in constants:
                    codes.add(constants[first.id])
                elif isinstance(first, ast.Name) and first.id == "code" and _has_code_param(tree):
                    pass  # the callers' literals and the default are collected below/above
                elif (
                    isinstance(first, ast.JoinedStr) and ast.unparse(first) == "f'all_{kind}s_down'"
                ):
                    codes.update(f"all_{kind}s_down" for kind in SOURCE_KINDS)
                elif isinstance(first, ast.Attribute) and ast.unparse(first) == "state.value":
                    codes.update(state.value for state in State)
                else:
                    unresolved.append(
                        f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}"
                    )
            elif name in code_params and name != "reason":
                index = code_params[name]
                value = node.args[index] if index < len(node.args) else None
                for keyword in node.keywords:
                    if keyword.arg == "code":
                        value = keyword.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    codes.add(value.value)
    return codes, unresolved


def test_every_reason_code_has_words_in_every_catalogue() -> None:
    codes, unresolved = codes_in_code_base()
    assert not unresolved, "reason codes the test cannot see:\n" + "\n".join(unresolved)
    # The scan finds what the code base sets today (a sample, so the scan cannot go blind).
    assert {"broker_unreachable", "camera_offline", "no_answer", "read_failed"} <= codes
    assert {"all_sensors_down", "all_cameras_down", "wedged", "stalled", "starting"} <= codes
    for lang, catalogue in CATALOGUES.items():
        missing = sorted((codes | ANNOUNCED) - set(catalogue["reason"]))
        assert not missing, f"{lang}.json has no words for: {', '.join(missing)}"
        for code, entry in catalogue["reason"].items():
            assert set(entry) == {"text", "todo"} and entry["text"], (lang, code)
        assert "{component}" in catalogue["reason_fallback"]["text"]


def _keys(data: object, prefix: str = "") -> set[str]:
    if not isinstance(data, dict):
        return {prefix.rstrip(".")}
    return {k for key, value in data.items() for k in _keys(value, f"{prefix}{key}.")}


def test_catalogues_have_the_same_keys_and_known_placeholders() -> None:
    vi, en = (_keys({k: v for k, v in c.items() if k != "class"}) for c in CATALOGUES.values())
    assert vi == en, {"only vi": sorted(vi - en), "only en": sorted(en - vi)}
    assert CATALOGUES["vi"]["number"] == {"decimal": ",", "group": "."}
    assert CATALOGUES["en"]["number"] == {"decimal": ".", "group": ","}

    def strings(data: object) -> list[str]:
        if isinstance(data, dict):
            return [s for value in data.values() for s in strings(value)]
        return [data] if isinstance(data, str) else []

    for lang, catalogue in CATALOGUES.items():
        for text in strings(catalogue):
            for _, kind in PLACEHOLDER.findall(text):
                assert (kind or None) in TYPES, (lang, text)
    # Every class the shipped detector knows has a Vietnamese name.
    names = REPO / "models" / "coco.names"
    if names.is_file():
        classes = [line.strip() for line in names.read_text().splitlines() if line.strip()]
        assert not [c for c in classes if c not in CATALOGUES["vi"]["class"]]


def test_every_key_the_page_uses_exists() -> None:
    html = (STATIC / "index.html").read_text()
    script = (STATIC / "app.js").read_text()
    used = set(re.findall(r'data-t="([\w.]+)"', html))
    used |= set(re.findall(r't\("((?:ui|verdict)\.[\w.]+)"\)', script))
    assert len(used) > 40
    for lang, catalogue in CATALOGUES.items():
        keys = _keys(catalogue)
        assert not sorted(used - keys), (lang, sorted(used - keys))
    # The Vietnamese catalogue is Vietnamese: its sentences carry Vietnamese letters.
    vietnamese = re.compile(
        r"[ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ]", re.I
    )
    for key, text in CATALOGUES["vi"]["reason"].items():
        assert vietnamese.search(text["text"]), key


def test_no_sentence_is_built_from_english_on_the_server() -> None:
    # The status facts and the routes carry codes and numbers; the only words are in the
    # catalogues. A string literal that reads like a sentence in web/ would be one.
    for path in (PACKAGE / "web").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) == "reason":
                assert path.name == "server.py", f"{path.name}: a reason outside the server"
    facts = (PACKAGE / "web" / "facts.py").read_text()
    assert '"text"' in facts and "if details" in facts  # English only with details


def test_static_files_are_in_the_package() -> None:
    from edge_agent.web.assets import FILES, read_static

    for name in FILES:
        assert read_static(name)
