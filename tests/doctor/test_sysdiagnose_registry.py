"""`mdmpush doctor sysdiagnose` against the registry topic on the real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import main
from services.common.catalogue import Topics
from tests.doctor.conftest import Publisher
from tests.doctor.sysdiag import MAGIC, build_tree, make_tar
from tests.support.samples import SAMPLES, TOPIC

pytestmark = pytest.mark.kafka
OTHER_TOPIC = "com.apple.mgmt.External.99999999-0000-4000-8000-00000000beef"


@pytest.fixture
def registered(cli_env: Topics, publisher: Publisher) -> Topics:
    """UDID-1 enrolled twice: E-old (stale magic, CheckOut lost) and E-new (the live one)."""
    base = {**SAMPLES["DeviceRecord"], "udid": "UDID-1"}
    publisher.send(cli_env.registry, "DeviceRecord", "E-old",
                   {**base, "enrollment_id": "E-old", "push_magic": "OLD", "updated_at": 1})
    publisher.send(cli_env.registry, "DeviceRecord", "E-new",
                   {**base, "enrollment_id": "E-new", "push_magic": MAGIC, "updated_at": 2})
    publisher.flush()
    return cli_env


def test_matching_device_exits_0(registered: Topics, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = make_tar(build_tree(tmp_path / "src"), tmp_path / "sysdiagnose.tar.gz")
    assert main(["doctor", "sysdiagnose", str(path), "--enrollment", "E-new"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok       ") == 3 and "all three values match" in out
    assert "other enrollments of this device: E-old" in out
    assert main(["doctor", "sysdiagnose", str(path)]) == 0  # recognised by token / magic
    assert "registry: enrollment E-new" in capsys.readouterr().out


def test_stale_enrollment_and_replaced_certificate(
    registered: Topics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = build_tree(tmp_path, topic=OTHER_TOPIC)
    assert main(["doctor", "sysdiagnose", str(tree), "--enrollment", "E-old"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH push topic" in out and "MISMATCH push magic" in out
    assert f"the device listens on topic {OTHER_TOPIC}; your certificate's topic is {TOPIC}" \
        in out
    assert "enrollment E-new holds the device's PushMagic" in out
    assert "ok       push token (SHA-256)" in out


def test_unknown_enrollment_shows_the_device_side(
    registered: Topics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = build_tree(tmp_path)
    assert main(["doctor", "sysdiagnose", str(tree), "--udid", "UDID-404"]) == 1
    out = capsys.readouterr().out
    assert "no registry record for UDID UDID-404" in out and MAGIC in out
