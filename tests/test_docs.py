"""The documentation: generated reference pages that never drift, a JSON Schema that accepts
every shipped config and refuses a wrong one, links and anchors that resolve, a site that builds.

Fast and without Spark, except the MkDocs build (``slow``: a subprocess).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from markdown.extensions.toc import slugify

from segmentation.config import AppConfig, load_config
from tests.conftest import ROOT
from tools import config_keys, docs_reference

DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])


class _Yaml12Loader(yaml.SafeLoader):
    """YAML as editors read it (1.2 core schema): ``2025-06-30`` unquoted is a string."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def schema_errors(text: str) -> list[str]:
    schema = json.loads(docs_reference.SCHEMA_JSON.read_text(encoding="utf-8"))
    data = yaml.load(text, Loader=_Yaml12Loader) or {}
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(data)
    ]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


# --- generated pages -------------------------------------------------------------------------


def test_reference_pages_and_schema_equal_what_the_script_generates_now():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in docs_reference.render().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"{stale} differ from the code and conf/base.yaml: run `make docs`"


def test_every_config_key_has_a_description_in_base_yaml():
    keys = list(config_keys.walk(AppConfig, config_keys.base_defaults()))
    comments = config_keys.yaml_descriptions(config_keys.BASE_YAML.read_text(encoding="utf-8"))
    described = config_keys.describe(keys, comments)
    missing = [k.path for k in keys if not described.get(k.path)]
    assert not missing, f"comment these keys in conf/base.yaml (then `make docs`): {missing}"


def test_a_comment_describes_the_key_below_it_at_its_indentation_only():
    text = (
        "# the section\n"
        "a:\n"
        "  # first line\n"
        "  # second line\n"
        "  b: 1   # and the end of the line\n"
        "    # deeper: nobody's\n"
        "  c: '#not a comment'\n"
        "\n"
        "  # after a blank line\n"
        "\n"
        "  d: 2\n"
    )
    assert config_keys.yaml_descriptions(text) == {
        "a": "the section",
        "a.b": "first line second line and the end of the line",
    }


def test_configuration_reference_gives_each_key_an_anchor_type_and_default():
    page = docs_reference.CONFIGURATION_MD.read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if '<a id="training.k_rule"></a>' in line)
    assert "`balanced`" in row and "`granular`" in row and "How k is chosen" in row
    assert '<a id="input.events.time_zone"></a>' in page and "`UTC`" in page


def test_tables_reference_lists_every_contract_with_its_descriptions():
    """The page says what the contracts say: every table, and each column's description (the
    same text the tables carry as Delta comments)."""
    page = docs_reference.TABLES_MD.read_text(encoding="utf-8")
    for table in docs_reference.contract_tables():
        assert f"\n## {table.name}\n" in page
    membership = page.split("\n## segment_membership\n", 1)[1].split("\n## ", 1)[0]
    assert "Partitioned by `model_name`, `as_of`." in membership
    assert "Delta reader version 1, writer version 2." in membership
    assert "`segment_membership_current`" in membership
    assert (
        "| `distance` | DOUBLE | yes | Euclidean distance to the segment's centre in the "
        "model's scaled feature space (null for rule-based segmentations). |"
    ) in membership
    features = page.split("\n## customer_features\n", 1)[1].split("\n## ", 1)[0]
    assert "| `recency_days` | Days since the last order" in features and "Evolves" in features


# --- the JSON Schema -------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_config_file_validates_against_the_schema_and_names_it(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=../docs/reference/config.schema.json")
    assert schema_errors(text) == []


def test_a_wrong_config_file_fails_the_schema_naming_each_problem():
    wrong = (
        "training:\n"
        "  k_rule: best\n"  # not a choice
        "  k_min: two\n"  # not an integer
        "  kmax: 8\n"  # no such key
        "features:\n"
        "  windows_days: 30\n"  # not a list
    )
    errors = schema_errors(wrong)
    assert any(e.startswith("training.k_rule:") for e in errors), errors
    assert any(e.startswith("training.k_min:") for e in errors), errors
    assert any("'kmax' was unexpected" in e for e in errors), errors
    assert any(e.startswith("features.windows_days:") for e in errors), errors


def test_schema_carries_the_descriptions_and_base_yaml_defaults():
    schema = json.loads(docs_reference.SCHEMA_JSON.read_text(encoding="utf-8"))
    training = schema["$defs"]["TrainingConfig"]["properties"]
    assert "How k is chosen" in training["k_rule"]["description"]
    assert training["features"]["default"][0] == "recency_days"  # base.yaml's, not the model's
    assert "description" in schema["properties"]["training"]


@pytest.mark.parametrize("page", ["README.md", "docs/own-data.md"])
def test_published_overlays_validate_and_load(page, tmp_path):
    blocks = [b for b in code_blocks((ROOT / page).read_text(encoding="utf-8"), "yaml")
              if b.startswith("# conf/")]  # fmt: skip
    assert blocks, f"no overlay in {page}"
    for block in blocks:
        assert schema_errors(block) == []
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(block, encoding="utf-8")
        load_config(overlay, base=ROOT / "conf" / "base.yaml")


# --- links and anchors -----------------------------------------------------------------------

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_RAW_ID = re.compile(r"<a\s+(?:[^>]*\s)?id=\"([^\"]+)\"")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and code spans, escaped brackets removed."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "``", text)
    return text.replace("\\[", " ").replace("\\]", " ")


def anchors(text: str) -> set[str]:
    """The ids a page has: its headings as MkDocs' toc names them, and raw ``<a id>``."""
    found: set[str] = set()
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", outside, re.M):
        plain = re.sub(r"<[^>]+>", "", heading).replace("`", "").replace("*", "")
        slug = slugify(plain, "-")
        unique, n = slug, 0
        while unique in found:
            n += 1
            unique = f"{slug}_{n}"
        found.add(unique)
    return found | set(_RAW_ID.findall(outside))


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        where, _, fragment = target.partition("#")
        path = (page.parent / where).resolve() if where else page
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and path.suffix == ".md":
            if fragment not in anchors(path.read_text(encoding="utf-8")):
                broken.append(f"{target} (no such anchor)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_checker_sees_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "other.md").write_text('# Other\n\n## A `code` heading\n<a id="x.y"></a>\n')
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading) [ok](other.md#x.y) [ok](#here)\n"
        "[bad](other.md#nope) [bad](missing.md) `[not a link](nowhere.md)`\n\n## Here\n"
    )
    assert broken_links(page) == ["other.md#nope (no such anchor)", "missing.md (no such file)"]


# Files the pages name as examples of the user's own, not the repository's.
_USER_FILES = {"conf/my.yaml", "conf/mydata.yaml"}


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_every_repository_path_a_page_names_exists(page):
    """Module paths in prose drift when the code moves (as the flat modules did)."""
    named = set(
        re.findall(r"\b(?:segmentation|jobs|tools|tests|conf|docs)/[\w./-]*\w", page.read_text())
    )
    missing = sorted(p for p in named - _USER_FILES if not (ROOT / p).exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_readme_links_to_the_tables_features_and_configuration_pages():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in ("docs/reference/tables.md", "docs/features.md",
                   "docs/reference/configuration.md", "docs/own-data.md"):  # fmt: skip
        assert f"]({target}" in readme, target


# --- make targets ----------------------------------------------------------------------------


def make_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return [t for t in re.findall(r"^([a-zA-Z_-]+):.*## ", text, re.M) if t != "help"]


def test_readme_lists_every_make_target():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [t for t in make_targets() if f"`{t}`" not in readme]
    assert not missing, f"README.md does not list make targets {missing}"


def test_make_help_lists_docs():
    help_text = subprocess.run(
        ["make", "--no-print-directory", "-s", "help"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    listed = re.findall(r"^\s+(?:\x1b\[\d+m)?([a-zA-Z_-]+)", help_text, re.M)
    assert "docs" in listed and set(make_targets()) <= set(listed)


# --- the site --------------------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict_succeeds(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    page = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert 'id="training.k_rule"' in page
    assert (site / "reference" / "config.schema.json").is_file()
