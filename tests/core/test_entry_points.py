"""agex finds entry points without importlib.metadata; it must find exactly what
importlib.metadata finds."""

import sys
import zipfile
from importlib import metadata

import pytest

from agex.entry_points import EntryPoint, canonical, entry_points


def by_metadata(group: str, path: list[str]) -> set[tuple[str, str, str, str]]:
    seen, out = set(), set()
    for dist in metadata.distributions(path=path):
        name = canonical(dist.metadata["Name"])
        if name in seen:
            continue
        seen.add(name)
        out |= {
            (name, dist.version, ep.name, ep.value) for ep in dist.entry_points if ep.group == group
        }
    return out


def by_agex(group: str, path: list[str]) -> set[tuple[str, str, str, str]]:
    return {(ep.distribution, ep.version, ep.name, ep.value) for ep in entry_points(group, path)}


@pytest.mark.parametrize("group", ["agex", "console_scripts", "pytest11"])
def test_agrees_with_importlib_metadata_on_this_environment(group) -> None:
    found = by_agex(group, sys.path)
    assert found == by_metadata(group, sys.path)
    if group == "agex":
        assert {d for d, *_ in found} == {
            canonical(ep.dist.name) for ep in metadata.entry_points(group="agex")
        }


def dist_info(site, name, version, text=None, suffix="dist-info"):
    folder = site / f"{name}-{version}.{suffix}"
    folder.mkdir(parents=True)
    (folder / ("METADATA" if suffix == "dist-info" else "PKG-INFO")).write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
    )
    if text is not None:
        (folder / "entry_points.txt").write_text(text)


def test_agrees_on_awkward_layouts(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    dist_info(first, "agex_plain", "1.0", "[agex]\nplain = agex_plain.plugin\n")
    dist_info(
        first,
        "agex_Mixed.Case",
        "2.0rc1",
        "# comment\n[console_scripts]\nx = y:z\n\n[agex]\n# another comment\n"
        "  spaced   =   pkg.mod:attr.inner [extra]  \nsecond=pkg.other\n[other]\nz = q\n",
    )
    dist_info(first, "no_entry_points", "0.1")
    dist_info(first, "agex_legacy", "3.1", "[agex]\nlegacy = legacy.plugin\n", "egg-info")
    # The same distribution later on the path: the first copy wins.
    dist_info(second, "agex_plain", "0.9", "[agex]\nold = agex_plain.old\n")
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("agex_zipped-4.0.dist-info/METADATA", "Name: agex-zipped\nVersion: 4.0\n")
        z.writestr("agex_zipped-4.0.dist-info/entry_points.txt", "[agex]\nzipped = zz.plugin\n")
    path = [str(first), str(second), str(archive), str(tmp_path / "missing")]

    found = by_agex("agex", path)
    assert found == by_metadata("agex", path)
    assert ("agex-mixed-case", "2.0rc1", "spaced", "pkg.mod:attr.inner [extra]") in found
    assert ("agex-plain", "1.0", "plain", "agex_plain.plugin") in found
    assert ("agex-zipped", "4.0", "zipped", "zz.plugin") in found
    assert not any(version == "0.9" for _, version, _, _ in found)


def test_load_module_attribute_and_extras() -> None:
    assert EntryPoint("x", "os.path", "d", None).load().__name__ == "posixpath"
    assert EntryPoint("x", "os:path.join [extra]", "d", None).load() is __import__("os").path.join


@pytest.mark.parametrize(
    ("raw", "name"),
    [("Agex_Host.HTTP", "agex-host-http"), ("agex--core", "agex-core"), ("a_b", "a-b")],
)
def test_canonical_names(raw, name) -> None:
    assert canonical(raw) == name
