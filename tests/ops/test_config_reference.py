"""docs/configuration.md is the settings models, rendered: complete, current, no secret shown."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.cli.main import main as cli
from services.common import config_reference
from services.common.config_reference import UNDOCUMENTED, describe


def test_committed_page_is_the_generated_one() -> None:
    committed = config_reference.DOC_PATH.read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "docs/configuration.md is stale: run `mdmpush config reference`")


def test_every_settings_model_and_field_is_on_the_page() -> None:
    classes = {c.__name__: c for c in config_reference.settings_classes()}
    assert {"KafkaSettings", "ClockSettings", "LogSettings", "GatewaySettings",
            "FanoutSettings", "SenderSettings", "CorrelatorSettings"} <= classes.keys()
    page = config_reference.render()
    for cls in classes.values():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name in cls.model_fields:
            assert f"`{(prefix + name).upper()}`" in page, (cls.__name__, name)


def test_every_setting_is_documented() -> None:
    new = sorted(config_reference.undocumented())
    assert not new, f"document these settings (a `#:` comment above the field): {new}"


class _Example(BaseSettings):
    """An example model."""

    model_config = SettingsConfigDict(env_prefix="MDMPUSH_EXAMPLE_")

    #: From a comment,
    #: over two lines.
    commented: int = 3
    described: str = Field(default="x", description="From the description.")
    docstringed: float = 1.5
    """From the attribute docstring."""
    bare: bool = False
    password: SecretStr = SecretStr("hunter2-default")
    maybe_key: SecretStr | None = None


def test_meaning_comes_from_description_comment_or_docstring() -> None:
    rows = {s.variable: s for s in describe(_Example).settings}
    assert rows["MDMPUSH_EXAMPLE_COMMENTED"].meaning == "From a comment, over two lines."
    assert rows["MDMPUSH_EXAMPLE_COMMENTED"].default == "`3`"
    assert rows["MDMPUSH_EXAMPLE_DESCRIBED"].meaning == "From the description."
    assert rows["MDMPUSH_EXAMPLE_DOCSTRINGED"].meaning == "From the attribute docstring."
    assert rows["MDMPUSH_EXAMPLE_BARE"].meaning == UNDOCUMENTED
    assert rows["MDMPUSH_EXAMPLE_BARE"].default == "`false`"


def test_secrets_show_no_default() -> None:
    rows = {s.variable: s for s in describe(_Example).settings}
    for name in ("MDMPUSH_EXAMPLE_PASSWORD", "MDMPUSH_EXAMPLE_MAYBE_KEY"):
        assert rows[name].type.startswith("secret")
        assert "hunter2" not in rows[name].default and "secret" in rows[name].default


def test_cli_check_reports_a_stale_page(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    assert cli(["config", "reference", "--output", str(page)]) == 0
    assert cli(["config", "reference", "--check", "--output", str(page)]) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("MDMPUSH_KAFKA_", "X_"),
                    encoding="utf-8")
    assert cli(["config", "reference", "--check", "--output", str(page)]) == 1
