"""benchmarks/vgg_variants.py: each variant is the shipped config with exactly its keys changed, and
--reuse refuses a run folder trained with another config."""
import json

import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def variants():
    return load_benchmark("vgg_variants")


def test_each_variant_changes_only_its_keys(variants):
    shipped = variants.variant_config("shipped").to_dict()
    for slug, changes in variants.VARIANTS.items():
        cfg = variants.variant_config(slug).to_dict()
        differing = {k for k in set(cfg) | set(shipped) if cfg.get(k) != shipped.get(k)}
        expected = {k for k, v in changes.items() if k in shipped or v is not None}
        if "model" in changes:  # another model file: its resolved layers differ too
            expected.add("model_spec")
        assert differing == expected, slug
    assert variants.variant_config("noaug").augment == "none"
    assert variants.describe("shipped") == "as shipped"
    assert variants.describe("plain") == "update_rule: plain"


def test_reuse_checks_the_recorded_config(variants, tmp_path):
    cfg = variants.variant_config("plain")
    summary = {"config": json.loads(json.dumps(cfg.to_dict())), "backend": "cpu", "final_test_accuracy": 0.9}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert variants.reuse(cfg, tmp_path)["final_test_accuracy"] == 0.9
    with pytest.raises(SystemExit, match="not trained with this variant"):
        variants.reuse(variants.variant_config("shipped"), tmp_path)


def test_rows_of_other_variants_are_kept_with_their_date(variants, tmp_path):
    md = tmp_path / "results.md"
    md.write_text("<!-- BEGIN vgg-variants -->\n## t\n\nDate: 2026-12-01\n\n"
                  "| variant | change | epochs | final test % | best test % | final train % | img/s |\n"
                  "|---|---|---|---|---|---|---|\n"
                  "| plain | update_rule: plain | 15 | 91.20 | 91.34 (epoch 14) | 90.38 | 1,754 |\n"
                  "<!-- END vgg-variants -->\n")
    assert variants.earlier_rows(md) == [
        "| plain | update_rule: plain | 15 | 91.20 | 91.34 (epoch 14) | 90.38 | 1,754 | 2026-12-01 |"]
    assert variants.earlier_rows(tmp_path / "missing.md") == []
