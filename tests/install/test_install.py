"""scripts/install run for real into staging trees (`--root`), with no network: the files,
owners and modes it leaves, a second run that changes nothing, --upgrade, --uninstall,
--purge, and an offline bundle that installs with `pip --no-index` only."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from edge_agent.config import load_settings
from tests.conftest import REPO
from tests.install.conftest import (
    UNIT,
    Staged,
    mode_owner,
    offline_env,
    run_install,
    snapshot,
)

# Real installs (a venv of ~400 MB each) on a shared machine: slow, but bounded.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def manifest_digests(models: Path) -> dict[str, str]:
    files: dict[str, str] = json.loads((models / "MANIFEST.json").read_text())["files"]
    return files


def test_staged_tree_has_the_expected_files_owners_and_modes(staged: Staged) -> None:
    root, prefix = staged.root, staged.prefix
    uid, gid = staged.ids()
    groups = (root / "etc" / "group").read_text()
    assert any(line.startswith("video:") and "edge-agent" in line for line in groups.splitlines())
    assert any(line.startswith("dialout:") and "edge-agent" in line for line in groups.splitlines())

    assert mode_owner(prefix) == ("0o755", 0, 0)
    assert mode_owner(root / "etc" / "edge-agent") == ("0o750", 0, gid)
    assert mode_owner(root / "etc" / "edge-agent" / "edge-agent.toml") == ("0o640", 0, gid)
    assert mode_owner(root / "etc" / "edge-agent" / "credentials") == ("0o700", 0, 0)
    assert mode_owner(root / "var" / "lib" / "edge-agent") == ("0o750", uid, gid)
    assert mode_owner(root / "etc" / "systemd" / "system" / UNIT) == ("0o644", 0, 0)
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / UNIT
    assert wants.is_symlink() and str(wants.readlink()) == f"/etc/systemd/system/{UNIT}"

    # The model comes from the tree it was built in, checksums as the build recorded them.
    for name, digest in manifest_digests(prefix / "models").items():
        assert mode_owner(prefix / "models" / name) == ("0o644", 0, 0)
        assert (
            subprocess.run(
                ["sha256sum", str(prefix / "models" / name)], capture_output=True, text=True
            ).stdout.split()[0]
            == digest
        )
    # No demo media, nor a source tree, on a node.
    assert not [p for p in root.rglob("*") if p.name == "media" or p.suffix == ".avi"]
    assert not (prefix / "edge_agent").exists() and not (prefix / "tests").exists()

    # The venv's scripts name the final interpreter, so the tree runs once it is the root.
    shebang = (prefix / ".venv" / "bin" / "edge-agent").read_text().splitlines()[0]
    assert shebang == "#!/opt/edge-agent/.venv/bin/python"
    version = subprocess.run(
        [str(staged.python), "-m", "edge_agent", "version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("edge-agent ")

    # The config: this node's paths, and no simulated sensor (a node sends only what it
    # measures); it validates.
    config = root / "etc" / "edge-agent" / "edge-agent.toml"
    settings = load_settings(config, env={})
    assert settings.node.id == socket.gethostname().split(".")[0]
    assert str(settings.paths.state_dir) == "/var/lib/edge-agent"
    assert str(settings.paths.model_dir) == "/opt/edge-agent/models"
    assert [s.kind for s in settings.sensors] == ["system"]
    assert settings.cameras == []

    page = f"status page: http://127.0.0.1:{settings.web.port}/"  # the installed config's port
    for line in ("service:", page, "journalctl -u edge-agent"):
        assert line in staged.output, staged.output


def test_second_run_upgrade_uninstall_and_purge(wheelhouse: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    run_install(
        "--root", str(root), "--credential", f"mqtt.password={secret}", wheelhouse=wheelhouse
    )
    credential = root / "etc" / "edge-agent" / "credentials" / "mqtt.password"
    assert mode_owner(credential) == ("0o600", 0, 0)
    assert credential.read_text() == "s3cret\n"

    before = snapshot(root)
    again = run_install(
        "--root", str(root), "--credential", f"mqtt.password={secret}", wheelhouse=wheelhouse
    )
    assert "0 change(s)" in again.stdout, again.stdout
    after = snapshot(root)
    assert after == before, {
        k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
    }

    config = root / "etc" / "edge-agent" / "edge-agent.toml"
    edited = config.read_text().replace('district = "district-01"', 'district = "hoan-kiem"')
    assert edited != config.read_text()
    config.write_text(edited)
    state = root / "var" / "lib" / "edge-agent" / "outbox.sqlite3"
    state.write_bytes(b"the outbox")
    upgraded = run_install("--root", str(root), "--upgrade", wheelhouse=wheelhouse)
    assert "installed edge_agent-" in upgraded.stdout, upgraded.stdout
    assert config.read_text() == edited
    assert state.read_bytes() == b"the outbox"
    assert load_settings(config, env={}).node.district == "hoan-kiem"

    run_install("--root", str(root), "--uninstall", wheelhouse=wheelhouse)
    assert not (root / "opt" / "edge-agent").exists()
    assert not (root / "etc" / "systemd" / "system" / UNIT).exists()
    assert not (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / UNIT).exists()
    assert config.read_text() == edited and credential.read_text() == "s3cret\n"
    assert state.read_bytes() == b"the outbox"

    run_install("--root", str(root), "--uninstall", "--purge", wheelhouse=wheelhouse)
    assert not (root / "etc" / "edge-agent").exists()
    assert not (root / "var" / "lib" / "edge-agent").exists()


def test_bundle_installs_with_no_network(wheelhouse: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "edge-agent.tar"
    made = run_install("--bundle", str(bundle), wheelhouse=wheelhouse)
    assert "wrote" in made.stdout
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        (top,) = {name.split("/")[0] for name in names}
        tar.extractall(tmp_path / "usb", filter="data")
    members = {name.removeprefix(top + "/") for name in names}
    assert {"scripts/install", f"systemd/{UNIT}", "models/MANIFEST.json"} <= members
    assert any(m.startswith("wheels/edge_agent-") for m in members)
    assert any(m.startswith("wheels/onnxruntime-") for m in members)
    assert not [m for m in members if m.startswith("media") or m.endswith(".avi")]

    # The unpacked bundle installs with its own wheels only, in a namespace with no network.
    unpacked = tmp_path / "usb" / top
    root = tmp_path / "node"
    run_install("--root", str(root), wheelhouse=None, script=unpacked / "scripts" / "install")
    python = root / "opt" / "edge-agent" / ".venv" / "bin" / "python"
    version = subprocess.run([str(python), "-m", "edge_agent", "version"], capture_output=True)
    assert version.returncode == 0, version.stderr
    assert manifest_digests(root / "opt" / "edge-agent" / "models") == manifest_digests(
        unpacked / "models"
    )


def test_altered_model_installs_nothing(wheelhouse: Path, tmp_path: Path, model_dir: Path) -> None:
    # A source tree whose model does not match its manifest (a truncated copy, a bad disk).
    tree = tmp_path / "tree"
    for part in ("scripts", "systemd", "config", "docs"):
        shutil.copytree(REPO / part, tree / part)
    shutil.copytree(model_dir, tree / "models")
    with open(tree / "models" / "nanodet.onnx", "r+b") as model:
        model.seek(1000)
        model.write(b"\0" * 16)
    root = tmp_path / "root"
    result = run_install(
        "--root", str(root), wheelhouse=wheelhouse, script=tree / "scripts" / "install", check=False
    )
    assert result.returncode != 0
    assert "do not match MANIFEST.json" in result.stderr, result.stderr
    assert not (root / "opt").exists()


def test_wheel_builds_without_deprecation_warnings(wheelhouse: Path, tmp_path: Path) -> None:
    pip = [str(REPO / ".venv" / "bin" / "python"), "-m", "pip"]
    result = subprocess.run(
        [*pip, "wheel", "-v", "--no-deps", "--wheel-dir", str(tmp_path), str(REPO)],
        env=offline_env(wheelhouse),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Deprecat" not in output and "deprecat" not in output, output
    (wheel,) = tmp_path.glob("edge_agent-*.whl")
    assert wheel.stat().st_size > 0
