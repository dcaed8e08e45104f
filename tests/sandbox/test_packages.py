"""The package layer: built once (concurrent requests wait for one build) from loopback
registries, mounted read-only into a session sandbox with the variables that make the tools find
it; failures carry the installer's output; managers that cannot run here fail clearly.

What is tested how: pip (a PEP 503 index on 127.0.0.1 serving a wheel built by the test) and
npm (a tiny registry on 127.0.0.1) install for real; apt runs for real against the host's package
lists with a package that does not exist (offline: the failure path); cargo, gem and go are
tested for their "not installed on this host" error when their program is not under /usr.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.sandbox.bwrap import SandboxMount, SessionMounts
from hangar.sandbox.jobs import available_in_sandbox
from hangar.sandbox.packages import LAYER, PackageCache, PackageInstallError, PackageSpec, layer_env
from tests.local_servers import build_npm_tarball, build_wheel, npm_registry, pip_index

from .conftest import MakeExecutor, needs_bwrap, run

pytestmark = needs_bwrap

WHEEL = build_wheel("hangar-probe", "1.0", "VALUE = 'probe from the local index'\n")
TARBALL = build_npm_tarball("hangar-probe", "1.0.0", "module.exports = { value: 'probe from npm' };\n")


async def test_pip_and_npm_layer_built_once_and_mounted_read_only(
    tmp_path: Path, make_executor: MakeExecutor
) -> None:
    with pip_index({"hangar-probe": WHEEL}) as index, npm_registry("hangar-probe", "1.0.0", TARBALL) as npm:
        settings = Settings(
            data_dir=tmp_path / "data", pip_index_url=f"{index.url}/simple/", npm_registry=npm.url
        )
        lines: list[tuple[str, str]] = []
        cache = PackageCache(settings, on_line=lambda m, t: lines.append((m, t)))
        spec = PackageSpec.from_config(
            {"type": "packages", "pip": ["hangar-probe==1.0"], "npm": ["hangar-probe"]}
        )
        assert cache.ready(spec) is None
        # Three sessions of one environment at once: one build, the others wait for it.
        layers = await asyncio.gather(*(cache.ensure(spec) for _ in range(3)))
        assert len(set(layers)) == 1
        layer = layers[0]
        wheel_downloads = [h for h in index.hits if h.startswith("GET /files/")]
        tgz_downloads = [h for h in npm.hits if h.endswith(".tgz")]
        assert len(wheel_downloads) == 1 and len(tgz_downloads) == 1
        assert {m for m, _ in lines} == {"pip", "npm"}  # progress lines reach the callback
        assert not list(cache.root.glob(".tmp-*"))  # built in a temp dir, renamed into place
        # A later request (another server process, say) reuses the layer: no new download.
        again = await PackageCache(settings).ensure(spec)
        assert again == layer and len([h for h in index.hits if h.startswith("GET /files/")]) == 1
        # The key covers the registry: another index is another layer.
        other = Settings(data_dir=settings.data_dir, pip_index_url="http://127.0.0.1:1/simple/")
        assert spec.key(other) != spec.key(settings)

    env = layer_env(layer)
    assert env["PYTHONPATH"] == f"{LAYER}/pip" and env["NODE_PATH"] == f"{LAYER}/npm/node_modules"
    ex = make_executor("sesn_pkgs")
    ex.set_mounts(SessionMounts((SandboxMount(layer, LAYER),), tuple(env.items())))
    assert await run(ex, "python3 -c 'import hangar_probe; print(hangar_probe.VALUE)'") == (
        "probe from the local index",
        False,
    )
    assert await run(ex, "node -e \"console.log(require('hangar-probe').value)\"") == (
        "probe from npm",
        False,
    )
    text, _ = await run(ex, f"touch {LAYER}/pip/x 2>&1; rm -rf {LAYER}/pip/hangar_probe 2>&1; ls {LAYER}/pip")
    assert "Read-only file system" in text and "hangar_probe" in text
    # Mounts changed between calls: the next command runs in a new sandbox with the new mounts.
    ex.set_mounts(SessionMounts())
    text, _ = await run(ex, f"ls {LAYER} 2>&1; echo $PYTHONPATH")
    assert "No such file or directory" in text


async def test_a_failed_install_reports_the_installer_output_and_leaves_nothing(tmp_path: Path) -> None:
    with pip_index({"hangar-probe": WHEEL}) as index:
        settings = Settings(data_dir=tmp_path / "data", pip_index_url=f"{index.url}/simple/")
        cache = PackageCache(settings)
        spec = PackageSpec.from_config({"pip": ["hangar-probe", "no-such-package-xyz"]})
        with pytest.raises(PackageInstallError) as info:
            await cache.ensure(spec)
    message = str(info.value)
    assert message.startswith(
        "Installing the environment's pip packages (hangar-probe, no-such-package-xyz) failed"
    )
    assert "no-such-package-xyz" in message.split("Last output:", 1)[1]  # pip's own words
    assert cache.ready(spec) is None and not list(cache.root.glob(".tmp-*"))
    # Option-like names never reach the installer.
    with pytest.raises(PackageInstallError, match="invalid package name"):
        await cache.ensure(PackageSpec.from_config({"pip": ["--index-url=http://evil"]}))


async def test_apt_unknown_package_fails_with_apt_message(tmp_path: Path) -> None:
    cache = PackageCache(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(PackageInstallError) as info:
        await cache.ensure(PackageSpec.from_config({"apt": ["hangar-no-such-package-xyz"]}))
    assert "apt packages (hangar-no-such-package-xyz) failed" in str(info.value)
    assert "Unable to locate package hangar-no-such-package-xyz" in str(info.value)


@pytest.mark.parametrize(
    ("manager", "program", "package"),
    [("cargo", "cargo", "cargo"), ("gem", "gem", "ruby"), ("go", "go", "golang-go")],
)
async def test_managers_missing_on_the_host_fail_clearly(
    tmp_path: Path, manager: str, program: str, package: str
) -> None:
    if available_in_sandbox(program):
        pytest.skip(f"{program} is installed here; its install needs a registry")
    cache = PackageCache(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(PackageInstallError) as info:
        await cache.ensure(PackageSpec.from_config({manager: ["anything"]}))
    assert str(info.value) == (
        f"{manager}: {program} is not installed on this Hangar host (install the {package} package), "
        f"so the environment's {manager} packages cannot be installed"
    )
    assert not os.path.exists(
        cache.root / PackageSpec.from_config({manager: ["anything"]}).key(cache.settings)
    )
