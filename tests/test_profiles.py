"""Tests for specalign.profiles: the exported per-run acceptance profiles.

The tables come from test_summary's hand-built run (greedy and sampled, rounds worked out there):
greedy replay at gamma 2: a accepts 2 | b accepts 1, 1 -> histogram [0, 2, 1];
gamma 4 (= the loop's rounds, ROUNDS_G4): a 3 | b 1, 1 -> [0, 2, 0, 1, 0]. The sampled run has a
loop at gamma 4 only (the same rounds), so its gamma 2 (iid_from_alpha) has no profile entry.
Each written file is validated with jsonschema directly against schemas/profile.schema.yaml.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_summary import BUDGET, write_run

from specalign import profiles
from specalign.specs import Decoding
from specalign.summary import acceptance_tables

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas" / "profile.schema.yaml").read_text())


def strict_load(text: str) -> dict:
    def no_constant(name):
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=no_constant)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profiles")
    runs = [write_run(tmp, Decoding("greedy", max_new_tokens=BUDGET), None),
            write_run(tmp, Decoding("sampled", do_sample=True, max_new_tokens=BUDGET), 0.5)]
    tables = acceptance_tables(runs, [2, 4], n_boot=200)
    out = tmp / "out" / "profiles"
    out.mkdir(parents=True)
    (out / "stale.json").write_text("{}")        # a run no longer in the config
    names = profiles.write_all(runs, tables, out)
    return out, names, tables


def test_every_written_profile_validates(written):
    out, names, _ = written
    assert sorted(p.name for p in out.iterdir()) == sorted(names) == [
        "toy__dr__tg__greedy.json", "toy__dr__tg__sampled.json"]       # the stale file is gone
    for p in out.iterdir():
        jsonschema.validate(strict_load(p.read_text()), SCHEMA)


def test_greedy_profile_hand(written):
    out, _, tables = written
    p = strict_load((out / "toy__dr__tg__greedy.json").read_text())
    assert (p["dataset"], p["draft"], p["target"], p["decoding"]) == ("toy", "dr", "tg", "greedy")
    assert p["decoding_params"] == {"do_sample": False, "temperature": None, "top_p": None,
                                    "max_new_tokens": BUDGET}
    g = {e["gamma"]: e for e in p["gammas"]}
    assert sorted(g) == [2, 4] and {e["method"] for e in g.values()} == {"greedy_replay"}
    e = g[4]
    assert e["acceptance_histogram"] == [0, 2, 0, 1, 0]
    assert (e["rounds"], e["accepted"], e["drafted"], e["n_samples"]) == (3, 5, 12, 2)
    assert e["marginal_accept_rates"] == pytest.approx([1, 1 / 3, 1 / 3, 0])
    assert e["conditional_accept_rates"] == pytest.approx([1, 1 / 3, 1, 0])
    assert e["mean_accepted_length"] == pytest.approx(8 / 3)      # the summary's tau
    assert e["vllm_speculative_config"] == {"num_speculative_tokens": 4, "rejection_sample_method": "synthetic",
                                            "synthetic_acceptance_rates": e["marginal_accept_rates"]}
    assert e["checks"]["passed"] and e["checks"]["mean_consistent"]
    assert g[2]["acceptance_histogram"] == [0, 2, 1] and g[2]["marginal_accept_rates"] == pytest.approx([1, 1 / 3])
    # alpha, c and device copied from the summary row by column name (alpha = 5/6: 5 matches of 6)
    row = tables["summary"].filter((tables["summary"]["decoding"] == "greedy")
                                   & (tables["summary"]["gamma"] == 4)).row(0, named=True)
    assert e["alpha"] == {"value": pytest.approx(5 / 6), "lo": row["leviathan_alpha_lo"],
                          "hi": row["leviathan_alpha_hi"]}
    for field, column in (("alpha_argmax", "alpha_argmax"), ("c", "c")):
        for part, suffix in (("value", ""), ("lo", "_lo"), ("hi", "_hi")):
            assert e[field][part] == copied(row.get(column + suffix)), (field, part)
    assert e["c"]["device"] == row.get("device")


def copied(x):
    """What a profile holds for a table cell: a column the tables lack, or NaN (nothing measured), is null."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def test_sampled_profile_has_only_measured_gammas(written):
    out, _, _ = written
    p = strict_load((out / "toy__dr__tg__sampled.json").read_text())
    assert [e["gamma"] for e in p["gammas"]] == [4] and p["gammas"][0]["method"] == "loop"
    assert p["gammas"][0]["acceptance_histogram"] == [0, 2, 0, 1, 0]
    assert p["decoding_params"]["do_sample"] is True


def test_validate_names_what_is_wrong(written):
    out, _, _ = written
    good = strict_load((out / "toy__dr__tg__greedy.json").read_text())
    profiles.validate(good, "x")

    def broken(edit):
        p = copy.deepcopy(good)
        edit(p["gammas"][1])
        return p

    cases = [
        (lambda e: e["acceptance_histogram"].pop(), r"x: gamma 4: acceptance_histogram has 4 entries, not 5"),
        (lambda e: [e["marginal_accept_rates"].__setitem__(3, 0.5),
                    e["vllm_speculative_config"]["synthetic_acceptance_rates"].__setitem__(3, 0.5)],
         r"x: gamma 4: marginal_accept_rates increase"),
        (lambda e: e["marginal_accept_rates"].__setitem__(3, 0.1), "x: gamma 4: the vLLM config is not"),
        (lambda e: e["vllm_speculative_config"].__setitem__("num_speculative_tokens", 3), "vLLM config"),
        (lambda e: e["marginal_accept_rates"].__setitem__(0, 1.5), r"x: gammas/1/marginal_accept_rates/0"),
        (lambda e: e.pop("checks"), "'checks' is a required property"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            profiles.validate(broken(edit), "x")
